// lkload: the LiveKit side of bench/sfu.sh. It drives a livekit-server with the same
// topology and the same synthetic media as `switchyard load sfu` drives media-node:
// VP8 frames of the sizes cli/src/load/sfu/media.rs computes (same keyframe interval,
// keyframe ratio, packet split and VP8 payload descriptor), optional three-layer
// simulcast, Opus in 20 ms packets, joins paced at -ramp per second. Publishers write
// RTP packets straight into LiveKit local tracks (no encoder, no packetizer); subscribers
// count what arrives per track. It prints a live line each second on stderr and a JSON
// summary with the same field names as `switchyard load sfu --json`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Media plan constants: keep equal to cli/src/load/sfu/media.rs.
const (
	maxPayload = 1000
	keyRatio   = 4
	descriptor = 4
	fps        = 30
)

type layer struct {
	rid           string
	width, height uint32
	bitrate       float64
	quality       livekit.VideoQuality
}

type plan struct {
	layers    []layer
	gopFrames uint64
	audioBps  float64
}

func (p *plan) frame(l *layer, n uint64) (bool, int) {
	gop := float64(p.gopFrames)
	gopBytes := l.bitrate / 8 * gop / fps
	delta := int(math.Max(1, math.Round(gopBytes/(gop-1+keyRatio))))
	key := n%p.gopFrames == 0
	if key {
		return true, delta * keyRatio
	}
	return false, delta
}

func split(size int) []int {
	body := maxPayload - descriptor
	packets := (size + body - 1) / body
	if packets < 1 {
		packets = 1
	}
	each := (size + packets - 1) / packets
	out := make([]int, packets)
	for i := range out {
		if i+1 < packets {
			out[i] = descriptor + each
		} else {
			out[i] = descriptor + size - each*(packets-1)
		}
	}
	return out
}

func vp8Payload(pictureID uint16, key bool, index, length int, w, h uint32) []byte {
	start := byte(0)
	if index == 0 {
		start = 0x10
	}
	p := make([]byte, 0, length)
	p = append(p, 0x80|start, 0x80, 0x80|byte(pictureID>>8)&0x7f, byte(pictureID))
	if index == 0 {
		if key {
			p = append(p, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, byte(w), byte(w>>8), byte(h), byte(h>>8))
		} else {
			p = append(p, 0x11, 0x02, 0x00)
		}
	}
	for len(p) < length {
		p = append(p, byte(pictureID))
	}
	return p
}

// live: counters summed for the live line.
type live struct {
	up, sentPackets, sentBytes, recvPackets, recvBytes, expected atomic.Uint64
}

type stream struct {
	base, max, packets, bytes uint64
	ext                       uint64
	lastSeq                   uint16
	clock                     float64
	lastAt                    time.Time
	lastTs                    uint32
	jitter                    float64
}

func (s *stream) packet(at time.Time, seq uint16, ts uint32, n int) uint64 {
	s.packets++
	s.bytes += uint64(n)
	var grew uint64
	if s.packets == 1 {
		s.ext = uint64(seq) + 1<<16
		s.base, s.max, s.lastSeq = s.ext, s.ext, seq
		grew = 1
	} else {
		d := int16(seq - s.lastSeq)
		ext := uint64(int64(s.ext) + int64(d))
		if d > 0 {
			s.ext, s.lastSeq = ext, seq
		}
		if ext > s.max {
			grew = ext - s.max
			s.max = ext
		}
	}
	if !s.lastAt.IsZero() {
		arrival := at.Sub(s.lastAt).Seconds() * s.clock
		sent := float64(int32(ts - s.lastTs))
		d := math.Abs(arrival - sent)
		s.jitter += (d - s.jitter) / 16
	}
	s.lastAt, s.lastTs = at, ts
	return grew
}

type outcome struct {
	joined, connected bool
	firstMedia        time.Duration
	measured          bool
	expectedTracks    int
	receivedTracks    int
	errors            []string
	streams           []*stream
	mu                sync.Mutex
}

type participant struct {
	url, token string
	publish    bool
	room       int
	live       *live
	out        *outcome
}

var flowing []atomic.Bool

func main() {
	url := flag.String("url", "ws://127.0.0.1:7880", "LiveKit signaling URL")
	key := flag.String("api-key", "", "API key")
	secret := flag.String("api-secret", "", "API secret")
	rooms := flag.Int("rooms", 1, "rooms")
	prefix := flag.String("room-prefix", "load", "room name prefix")
	publishers := flag.Int("publishers", 1, "publishers per room")
	subscribers := flag.Int("subscribers", 10, "subscribe-only participants per room")
	width := flag.Int("width", 1280, "video width (0: no video)")
	height := flag.Int("height", 720, "video height")
	videoBps := flag.Float64("video-bitrate", 2e6, "video bit rate of the top layer")
	simulcast := flag.Bool("simulcast", false, "three simulcast layers")
	keyframe := flag.Duration("keyframe-interval", 2500*time.Millisecond, "time between keyframes")
	audioBps := flag.Float64("audio-bitrate", 32000, "Opus bit rate (0: no audio)")
	duration := flag.Duration("duration", 30*time.Second, "whole run, joins included")
	ramp := flag.Float64("ramp", 10, "joins per second")
	flag.Parse()
	if *key == "" || *secret == "" {
		fmt.Fprintln(os.Stderr, "-api-key and -api-secret are required")
		os.Exit(2)
	}

	p := &plan{audioBps: *audioBps}
	p.gopFrames = uint64(math.Max(1, math.Round(keyframe.Seconds()*fps)))
	if *width > 0 {
		w, h := uint32(*width), uint32(*height)
		if *simulcast {
			p.layers = []layer{
				{"q", w / 4, h / 4, *videoBps / 16, livekit.VideoQuality_LOW},
				{"h", w / 2, h / 2, *videoBps / 4, livekit.VideoQuality_MEDIUM},
				{"f", w, h, *videoBps, livekit.VideoQuality_HIGH},
			}
		} else {
			p.layers = []layer{{"", w, h, *videoBps, livekit.VideoQuality_HIGH}}
		}
	}
	tracksPerPublisher := 0
	if len(p.layers) > 0 {
		tracksPerPublisher++
	}
	if p.audioBps > 0 {
		tracksPerPublisher++
	}

	flowing = make([]atomic.Bool, *rooms)
	var parts []*participant
	for r := 0; r < *rooms; r++ {
		for i := 0; i < *publishers; i++ {
			parts = append(parts, &participant{publish: true, room: r})
		}
	}
	for i := 0; i < *subscribers; i++ {
		for r := 0; r < *rooms; r++ {
			parts = append(parts, &participant{publish: false, room: r})
		}
	}
	seen := map[string]int{}
	for _, pt := range parts {
		kind := "sub"
		if pt.publish {
			kind = "pub"
		}
		k := fmt.Sprintf("%s-%d", kind, pt.room)
		identity := fmt.Sprintf("%s-%s-%d-%d", kind, *prefix, pt.room, seen[k])
		seen[k]++
		at := auth.NewAccessToken(*key, *secret)
		canPublish := pt.publish
		grant := &auth.VideoGrant{RoomJoin: true, Room: fmt.Sprintf("%s-%d", *prefix, pt.room), CanPublish: &canPublish}
		at.SetVideoGrant(grant).SetIdentity(identity).SetValidFor(*duration + time.Hour)
		tok, err := at.ToJWT()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pt.url, pt.token = *url, tok
		pt.live = &live{}
		exp := *publishers
		if pt.publish {
			exp--
		}
		pt.out = &outcome{expectedTracks: exp * tracksPerPublisher}
	}

	start := time.Now()
	end := start.Add(*duration)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	every := time.Duration(float64(time.Second) / *ramp)
	go func() {
		for i, pt := range parts {
			time.Sleep(time.Until(start.Add(every * time.Duration(i))))
			wg.Add(1)
			go func(pt *participant) {
				defer wg.Done()
				run(pt, p, stop)
			}(pt)
		}
	}()
	lastJoin := start.Add(every * time.Duration(len(parts)-1))
	steadyFrom := lastJoin.Add(time.Second)
	var prev, steadyBase totals
	prevAt := start
	var steadyAt time.Time
	tick := time.NewTicker(time.Second)
	for now := range tick.C {
		t := sum(parts)
		d := t.minus(prev)
		fmt.Fprintf(os.Stderr, "[%4.0fs] participants %d/%d up  send %.2f Mbit/s  receive %.2f Mbit/s  loss %.2f%%\n",
			now.Sub(start).Seconds(), t.up, len(parts), mbit(d.sentBytes, now.Sub(prevAt)), mbit(d.recvBytes, now.Sub(prevAt)), d.loss()*100)
		if steadyAt.IsZero() && !now.Before(steadyFrom) {
			steadyAt, steadyBase = now, t
		}
		prev, prevAt = t, now
		if !now.Add(500 * time.Millisecond).Before(end) {
			break
		}
	}
	stopped := time.Now()
	total := sum(parts)
	close(stop)
	waitTimeout(&wg, 5*time.Second)
	report(parts, start, stopped, steadyAt, total, steadyBase, *rooms, *publishers, *subscribers)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

type totals struct{ up, sentPackets, sentBytes, recvPackets, recvBytes, expected uint64 }

func sum(parts []*participant) totals {
	var t totals
	for _, p := range parts {
		t.up += p.live.up.Load()
		t.sentPackets += p.live.sentPackets.Load()
		t.sentBytes += p.live.sentBytes.Load()
		t.recvPackets += p.live.recvPackets.Load()
		t.recvBytes += p.live.recvBytes.Load()
		t.expected += p.live.expected.Load()
	}
	return t
}

func (t totals) minus(o totals) totals {
	return totals{t.up, t.sentPackets - o.sentPackets, t.sentBytes - o.sentBytes, t.recvPackets - o.recvPackets, t.recvBytes - o.recvBytes, t.expected - o.expected}
}

func (t totals) loss() float64 {
	if t.expected == 0 {
		return 0
	}
	return math.Max(0, 1-float64(t.recvPackets)/float64(t.expected))
}

func mbit(bytes uint64, over time.Duration) float64 {
	if over <= 0 {
		return 0
	}
	return float64(bytes) * 8 / over.Seconds() / 1e6
}

func fail(pt *participant, code string, err error) {
	pt.out.mu.Lock()
	pt.out.errors = append(pt.out.errors, code+": "+err.Error())
	pt.out.mu.Unlock()
}

func run(pt *participant, p *plan, stop chan struct{}) {
	started := time.Now()
	measure := flowing[pt.room].Load()
	var firstOnce sync.Once
	var tracksMu sync.Mutex
	tracks := map[string]bool{}
	cb := &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
				if pub.Kind() == lksdk.TrackKindVideo && len(p.layers) > 1 {
					pub.SetVideoQuality(livekit.VideoQuality_HIGH)
				}
				s := &stream{clock: float64(track.Codec().ClockRate)}
				pt.out.mu.Lock()
				pt.out.streams = append(pt.out.streams, s)
				pt.out.mu.Unlock()
				go func() {
					for {
						pkt, _, err := track.ReadRTP()
						if err != nil {
							return
						}
						now := time.Now()
						firstOnce.Do(func() {
							if measure {
								pt.out.mu.Lock()
								pt.out.firstMedia, pt.out.measured = now.Sub(started), true
								pt.out.mu.Unlock()
							}
						})
						tracksMu.Lock()
						tracks[pub.SID()] = true
						tracksMu.Unlock()
						pt.out.mu.Lock()
						grew := s.packet(now, pkt.SequenceNumber, pkt.Timestamp, len(pkt.Payload))
						pt.out.mu.Unlock()
						pt.live.recvPackets.Add(1)
						pt.live.recvBytes.Add(uint64(len(pkt.Payload)))
						pt.live.expected.Add(grew)
					}
				}()
			},
		},
		OnDisconnected: func() {},
	}
	room, err := lksdk.ConnectToRoomWithToken(pt.url, pt.token, cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		fail(pt, "connect", err)
		return
	}
	pt.out.joined, pt.out.connected = true, true
	pt.live.up.Store(1)
	defer func() {
		pt.live.up.Store(0)
		room.Disconnect()
		tracksMu.Lock()
		pt.out.receivedTracks = len(tracks)
		tracksMu.Unlock()
	}()
	if !pt.publish {
		<-stop
		return
	}
	var audio *lksdk.LocalTrack
	if p.audioBps > 0 {
		audio, err = lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
		if err == nil {
			_, err = room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "audio", Source: livekit.TrackSource_MICROPHONE})
		}
		if err != nil {
			fail(pt, "publish", err)
			return
		}
	}
	var video []*lksdk.LocalTrack
	if len(p.layers) > 0 {
		vp8 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
		top := p.layers[len(p.layers)-1]
		opts := &lksdk.TrackPublicationOptions{Name: "video", Source: livekit.TrackSource_CAMERA, VideoWidth: int(top.width), VideoHeight: int(top.height)}
		if len(p.layers) > 1 {
			for _, l := range p.layers {
				vl := &livekit.VideoLayer{Quality: l.quality, Width: l.width, Height: l.height, Bitrate: uint32(l.bitrate)}
				t, err := lksdk.NewLocalTrack(vp8, lksdk.WithSimulcast("camera", vl))
				if err != nil {
					fail(pt, "publish", err)
					return
				}
				video = append(video, t)
			}
			_, err = room.LocalParticipant.PublishSimulcastTrack(video, opts)
		} else {
			var t *lksdk.LocalTrack
			t, err = lksdk.NewLocalTrack(vp8)
			if err == nil {
				video = append(video, t)
				_, err = room.LocalParticipant.PublishTrack(t, opts)
			}
		}
		if err != nil {
			fail(pt, "publish", err)
			return
		}
	}
	send(pt, p, audio, video, stop)
}

// send writes the media plan's packets on interval ticks until stop.
func send(pt *participant, p *plan, audio *lksdk.LocalTrack, video []*lksdk.LocalTrack, stop chan struct{}) {
	flowing[pt.room].Store(true)
	t0 := time.Now()
	frameEvery := time.Second / fps
	audioEvery := 20 * time.Millisecond
	var audioN, frameN uint64
	seqs := make([]uint16, len(video))
	var audioSeq uint16
	opusLen := int(math.Max(2, math.Round(p.audioBps*0.02/8)))
	for {
		nextAudio := t0.Add(audioEvery * time.Duration(audioN))
		nextFrame := t0.Add(frameEvery * time.Duration(frameN))
		next := nextFrame
		if audio != nil && (len(video) == 0 || nextAudio.Before(nextFrame)) {
			next = nextAudio
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
		now := time.Now()
		// A late wake-up sends what fell due, at most 10 ms worth, and forgets older debt.
		if audio != nil && !now.Before(nextAudio) {
			if now.Sub(nextAudio) > 10*time.Millisecond {
				audioN = uint64(now.Sub(t0) / audioEvery)
			}
			payload := make([]byte, opusLen)
			for i := range payload {
				payload[i] = byte(audioN)
			}
			payload[0] = 0xf8
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: audioSeq, Timestamp: uint32(audioN * 960)}, Payload: payload}
			if audio.WriteRTP(pkt, nil) == nil {
				pt.live.sentPackets.Add(1)
				pt.live.sentBytes.Add(uint64(opusLen))
			}
			audioSeq++
			audioN++
		}
		if len(video) > 0 && !now.Before(nextFrame) {
			if now.Sub(nextFrame) > 10*time.Millisecond+frameEvery {
				frameN = uint64(now.Sub(t0) / frameEvery)
			}
			for i, l := range p.layers {
				key, size := p.frame(&l, frameN)
				sizes := split(size)
				for j, n := range sizes {
					payload := vp8Payload(uint16(frameN&0x7fff), key, j, n, l.width, l.height)
					pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seqs[i], Timestamp: uint32(frameN * 3000), Marker: j == len(sizes)-1}, Payload: payload}
					if video[i].WriteRTP(pkt, nil) == nil {
						pt.live.sentPackets.Add(1)
						pt.live.sentBytes.Add(uint64(n))
					}
					seqs[i]++
				}
			}
			frameN++
		}
	}
}

func quantile(v []float64, q float64) any {
	if len(v) == 0 {
		return nil
	}
	i := int(math.Ceil(float64(len(v))*q)) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(v) {
		i = len(v) - 1
	}
	return v[i]
}

func report(parts []*participant, start, stopped, steadyAt time.Time, total, steadyBase totals, rooms, publishers, subscribers int) {
	var joins []float64
	joined, connected, expected, received := 0, 0, 0, 0
	var lost, exp uint64
	var jitters []float64
	errors := map[string]int{}
	for _, pt := range parts {
		o := pt.out
		o.mu.Lock()
		if o.joined {
			joined++
		}
		if o.connected {
			connected++
		}
		if o.measured {
			joins = append(joins, o.firstMedia.Seconds())
		}
		expected += o.expectedTracks
		received += min(o.receivedTracks, o.expectedTracks)
		for _, s := range o.streams {
			if s.packets == 0 {
				continue
			}
			e := s.max - s.base + 1
			exp += e
			if e > s.packets {
				lost += e - s.packets
			}
			if s.packets > 1 {
				jitters = append(jitters, s.jitter/s.clock)
			}
		}
		for _, e := range o.errors {
			code := strings.SplitN(e, ":", 2)[0]
			errors[code]++
		}
		o.mu.Unlock()
	}
	sort.Float64s(joins)
	window, w := stopped.Sub(start), total
	if !steadyAt.IsZero() && stopped.Sub(steadyAt) >= time.Second {
		window, w = stopped.Sub(steadyAt), total.minus(steadyBase)
	}
	var meanJitter any
	if len(jitters) > 0 {
		s := 0.0
		for _, j := range jitters {
			s += j
		}
		meanJitter = s / float64(len(jitters))
	}
	lossRatio := 0.0
	if exp > 0 {
		lossRatio = float64(lost) / float64(exp)
	}
	errs := []map[string]any{}
	for code, n := range errors {
		errs = append(errs, map[string]any{"code": code, "count": n})
	}
	out := map[string]any{
		"rooms": rooms, "publishersPerRoom": publishers, "subscribersPerRoom": subscribers,
		"durationSeconds": stopped.Sub(start).Seconds(),
		"participants":    map[string]any{"total": len(parts), "joined": joined, "connected": connected},
		"firstMediaSeconds": map[string]any{
			"count": len(joins), "p50": quantile(joins, 0.5), "p95": quantile(joins, 0.95), "p99": quantile(joins, 0.99), "max": quantile(joins, 1),
		},
		"tracks":        map[string]any{"expected": expected, "received": received},
		"steadySeconds": window.Seconds(),
		"sent":          map[string]any{"packets": total.sentPackets, "bytes": total.sentBytes, "bps": mbit(w.sentBytes, window) * 1e6},
		"received": map[string]any{
			"packets": total.recvPackets, "bytes": total.recvBytes, "bps": mbit(w.recvBytes, window) * 1e6,
			"packetsPerSecond": float64(w.recvPackets) / window.Seconds(),
		},
		"lossRatio":     lossRatio,
		"lostPackets":   lost,
		"jitterSeconds": map[string]any{"mean": meanJitter},
		"errors":        errs,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
