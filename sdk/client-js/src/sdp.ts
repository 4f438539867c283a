/** `mid` → the `a=msid:<stream> <track>` of its media section. The server names a
 * forwarded track `a=msid:<participantSid> <trackSid>`. */
export function msidByMid(sdp: string): Map<string, { stream: string; track: string }> {
  const out = new Map<string, { stream: string; track: string }>();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
    const msid = /^a=msid:(\S+) (\S+)/m.exec(section);
    if (mid && msid?.[1] && msid[2]) out.set(mid, { stream: msid[1], track: msid[2] });
  }
  return out;
}
