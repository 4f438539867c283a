// Connection stats from RTCPeerConnection.getStats(): bitrates from the difference of two
// samples, loss, round-trip time, codec and simulcast layer. Pure over the report's entries.

export interface OutboundStats {
  kind: "audio" | "video";
  trackId?: string;
  rid?: string;
  codec?: string;
  bitrateBps: number;
  frameWidth?: number;
  frameHeight?: number;
  framesPerSecond?: number;
  /** Why the encoder limits quality (`bandwidth`, `cpu`, `none`). */
  qualityLimitationReason?: string;
  active?: boolean;
}

export interface InboundStats {
  kind: "audio" | "video";
  trackId?: string;
  mid?: string;
  codec?: string;
  bitrateBps: number;
  packetsReceived: number;
  packetsLost: number;
  /** Lost / (lost + received) since the previous sample, 0..1. */
  lossFraction: number;
  jitterMs?: number;
  frameWidth?: number;
  frameHeight?: number;
  framesDecoded?: number;
  framesPerSecond?: number;
  audioLevel?: number;
  totalAudioEnergy?: number;
}

export interface ConnectionStats {
  /** Round-trip time of the selected ICE candidate pair, milliseconds. */
  rttMs?: number;
  /** The sender-side estimate of what the uplink carries, bits/s. */
  availableOutgoingBitrateBps?: number;
  outbound: OutboundStats[];
  inbound: InboundStats[];
  timestampMs: number;
}

type Entry = Record<string, any> & { id: string; type: string; timestamp: number };

/** Summarize a getStats report; `previous` (the last summary's raw entries) gives rates. */
export function summarizeStats(
  entries: Iterable<Entry>,
  previous?: Map<string, Entry>,
): { stats: ConnectionStats; raw: Map<string, Entry> } {
  const raw = new Map<string, Entry>();
  for (const e of entries) raw.set(e.id, e);
  const codec = (id?: string) => (id ? raw.get(id)?.mimeType : undefined) as string | undefined;
  const rate = (e: Entry, field: string) => {
    const p = previous?.get(e.id);
    if (!p || e.timestamp <= p.timestamp) return 0;
    return Math.max(0, Math.round(((e[field] - p[field]) * 8 * 1000) / (e.timestamp - p.timestamp)));
  };
  const stats: ConnectionStats = { outbound: [], inbound: [], timestampMs: 0 };
  for (const e of raw.values()) {
    stats.timestampMs = Math.max(stats.timestampMs, e.timestamp);
    if (e.type === "candidate-pair" && (e.nominated || e.selected) && e.state === "succeeded") {
      if (typeof e.currentRoundTripTime === "number") stats.rttMs = Math.round(e.currentRoundTripTime * 1000);
      if (typeof e.availableOutgoingBitrate === "number") stats.availableOutgoingBitrateBps = e.availableOutgoingBitrate;
    } else if (e.type === "outbound-rtp") {
      stats.outbound.push({
        kind: e.kind,
        trackId: e.trackIdentifier,
        rid: e.rid,
        codec: codec(e.codecId),
        bitrateBps: rate(e, "bytesSent"),
        frameWidth: e.frameWidth,
        frameHeight: e.frameHeight,
        framesPerSecond: e.framesPerSecond,
        qualityLimitationReason: e.qualityLimitationReason,
        active: e.active,
      });
    } else if (e.type === "inbound-rtp") {
      const p = previous?.get(e.id);
      const lost = (e.packetsLost ?? 0) - (p?.packetsLost ?? 0);
      const got = (e.packetsReceived ?? 0) - (p?.packetsReceived ?? 0);
      stats.inbound.push({
        kind: e.kind,
        trackId: e.trackIdentifier,
        mid: e.mid,
        codec: codec(e.codecId),
        bitrateBps: rate(e, "bytesReceived"),
        packetsReceived: e.packetsReceived ?? 0,
        packetsLost: e.packetsLost ?? 0,
        lossFraction: lost + got > 0 ? Math.max(0, lost) / (Math.max(0, lost) + got) : 0,
        jitterMs: typeof e.jitter === "number" ? Math.round(e.jitter * 1000) : undefined,
        frameWidth: e.frameWidth,
        frameHeight: e.frameHeight,
        framesDecoded: e.framesDecoded,
        framesPerSecond: e.framesPerSecond,
        audioLevel: e.audioLevel,
        totalAudioEnergy: e.totalAudioEnergy,
      });
    }
  }
  return { stats, raw };
}
