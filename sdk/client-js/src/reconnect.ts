/** How the SDK reconnects after the signaling socket is lost. */
export interface ReconnectPolicy {
  /** `resume` attempts (same session, same tracks) before a full rejoin. */
  resumeAttempts: number;
  /** Full `join` attempts after resuming failed; 0 gives up after resume. */
  rejoinAttempts: number;
  /** First wait, milliseconds; doubles with each attempt. */
  baseDelayMs: number;
  /** Longest wait, milliseconds. */
  maxDelayMs: number;
  /** Fraction of each wait that is random (0: none, 0.5: ±50 %), so clients dropped
   * together do not come back together. */
  jitter: number;
}

export const DEFAULT_RECONNECT_POLICY: ReconnectPolicy = {
  resumeAttempts: 3,
  rejoinAttempts: 5,
  baseDelayMs: 300,
  maxDelayMs: 8000,
  jitter: 0.3,
};

/** The wait before attempt `attempt` (0-based) of a series: exponential backoff, capped,
 * with jitter; `random` returns [0, 1). At least `floorMs` (a server's retry hint). */
export function backoffDelay(attempt: number, policy: ReconnectPolicy, random: () => number, floorMs = 0): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt));
  const spread = exp * policy.jitter;
  const delay = exp - spread + 2 * spread * random();
  return Math.max(floorMs, Math.round(delay));
}

export type ReconnectStep = { kind: "resume" | "rejoin"; attempt: number; delayMs: number } | { kind: "give_up" };

/**
 * What to do next after a failure. `resumes`/`rejoins` count the attempts made so far;
 * `resumable` is false once the server refused a resume (`resume_failed`), told the client
 * to rejoin (`leave.reconnect: rejoin`, as a draining node does), or the session never
 * joined.
 */
export function nextStep(
  resumes: number,
  rejoins: number,
  resumable: boolean,
  policy: ReconnectPolicy,
  random: () => number,
  floorMs = 0,
): ReconnectStep {
  if (resumable && resumes < policy.resumeAttempts) {
    // The first resume goes at once: the session is still on the server.
    const delayMs = resumes === 0 ? floorMs : backoffDelay(resumes - 1, policy, random, floorMs);
    return { kind: "resume", attempt: resumes, delayMs };
  }
  if (rejoins < policy.rejoinAttempts) {
    return { kind: "rejoin", attempt: rejoins, delayMs: backoffDelay(rejoins, policy, random, floorMs) };
  }
  return { kind: "give_up" };
}
