/**
 * Rollouts: the request body (`POST /api/rollouts`) and the record kept in the state
 * (`state.rollouts[id]`, what `GET /api/rollouts/{id}` answers). One schema for validation,
 * types and the OpenAPI document.
 *
 * The record is the whole truth of a rollout: the driver (whichever instance holds the
 * `rollouts` lease) computes its next move from the record and the fleet's live figures
 * alone, and writes the record together with the route's split in one revisioned write, so
 * a driver that takes over continues from the step the record names and never applies a
 * step twice.
 */
import Type, { type Static } from 'typebox'
import { HeaderName, MirrorSpec, Name } from '../config/schema.js'

const Ms = (description: string, minimum = 0) => Type.Integer({ minimum, maximum: 7 * 86_400_000, description })

export const Strategy = Type.Union([Type.Literal('canary'), Type.Literal('blue-green')])
export type Strategy = Static<typeof Strategy>

export const Step = Type.Object(
  {
    weight: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'share of the route\'s traffic (percent) that goes to `to` in this step; a step has `weight` or `shadow`' })),
    shadow: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 100,
        description: 'a shadow step: this percent of the route\'s requests is copied to `to` and its answers compared, while `to` serves no user (weight 0); shadow steps come before any weight step',
      }),
    ),
    pauseMs: Type.Optional(Ms('how long the step lasts before the rollout moves on (if its analysis passes); left out: the rollout pauses here until `resume` or `promote`')),
  },
  { additionalProperties: false },
)
export type Step = Static<typeof Step>

export const AnalysisSpec = Type.Object(
  {
    intervalMs: Type.Optional(Ms('time between analyses, and the window each one looks at; default 10000', 100)),
    minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000, description: 'fewer requests to `to` in a window is inconclusive; default 50' })),
    maxErrorRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'highest share of 5xx and proxy errors on `to`; default 0.01' })),
    maxErrorRateDelta: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'highest excess of `to`\'s error rate over `from`\'s, judged when `from` has at least minRequests too' })),
    maxP99Ms: Type.Optional(Type.Number({ minimum: 0, description: 'highest p99 latency of `to`, in ms' })),
    maxP99DeltaMs: Type.Optional(Type.Number({ minimum: 0, description: 'highest excess of `to`\'s p99 over `from`\'s, in ms, judged when `from` has at least minRequests too' })),
    maxMismatchRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'shadow steps: highest share of compared answers of `to` that differ from `from`\'s; default 0.01' })),
    failureLimit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: 'failed analyses tolerated; one more fails the rollout; default 0' })),
  },
  { additionalProperties: false },
)
export type AnalysisSpec = Static<typeof AnalysisSpec>

export const RolloutEvent = Type.Union([
  Type.Literal('step'),
  Type.Literal('paused'),
  Type.Literal('resumed'),
  Type.Literal('promoted'),
  Type.Literal('aborted'),
  Type.Literal('failed'),
  Type.Literal('started'),
  Type.Literal('analysis'),
])
export type RolloutEvent = Static<typeof RolloutEvent>

export const Notify = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://',
      maxLength: 2048,
      description:
        'where events are POSTed as JSON; a link-local target (169.254.0.0/16, fe80::/10: cloud metadata) is refused, written as an address or resolved from a name; shown by the API and the logs as scheme://host/*** (the path of a Slack-style URL is its secret)',
    }),
    events: Type.Optional(Type.Array(RolloutEvent, { minItems: 1, maxItems: 8, description: 'which events; default all but `analysis`' })),
    secret: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 4096,
        description:
          'signs each attempt: X-Switchyard-Timestamp: <unix seconds>, X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of `<timestamp>.<body>`>; a receiver refuses a timestamp more than 5 minutes off; shown by the API as ***',
      }),
    ),
    timeoutMs: Type.Optional(Ms('per attempt; default 5000', 1)),
  },
  { additionalProperties: false },
)
export type Notify = Static<typeof Notify>

export const RolloutSpec = Type.Object(
  {
    id: Type.Optional(Name),
    route: Name,
    from: Name,
    to: Name,
    strategy: Type.Optional(Strategy),
    steps: Type.Optional(Type.Array(Step, { minItems: 1, maxItems: 100, description: 'canary: the weights of `to`, in order; a last step below 100 is followed by 100' })),
    preview: Type.Optional(
      Type.Object(
        {
          header: Type.Optional(HeaderName),
          value: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
          pauseMs: Type.Optional(Ms('blue-green: least time the preview is analysed before the switch')),
        },
        { additionalProperties: false, description: 'blue-green: requests with this header reach `to` before the switch; default header x-switchyard-preview, value = `to`' },
      ),
    ),
    analysis: Type.Optional(AnalysisSpec),
    shadow: Type.Optional(
      Type.Object(
        {
          methods: MirrorSpec.properties.methods,
          maxBodyBytes: MirrorSpec.properties.maxBodyBytes,
          maxConcurrent: MirrorSpec.properties.maxConcurrent,
          ignore: MirrorSpec.properties.ignore,
        },
        { additionalProperties: false, description: 'how shadow steps mirror: the route mirror\'s options (methods, maxBodyBytes, maxConcurrent, ignore)' },
      ),
    ),
    abort: Type.Optional(Type.Object({ rampMs: Type.Optional(Ms('on abort, move the weight back to `from` gradually over this time')) }, { additionalProperties: false })),
    notify: Type.Optional(Type.Array(Notify, { maxItems: 16 })),
  },
  { additionalProperties: false },
)
export type RolloutSpec = Static<typeof RolloutSpec>

export const Phase = Type.Union([Type.Literal('progressing'), Type.Literal('paused'), Type.Literal('promoted'), Type.Literal('aborted'), Type.Literal('failed')])
export type Phase = Static<typeof Phase>

export const Verdict = Type.Union([Type.Literal('pass'), Type.Literal('fail'), Type.Literal('inconclusive')])
export type Verdict = Static<typeof Verdict>

/** Figures of one side over one window. */
export const SideFigures = Type.Object({
  requests: Type.Integer(),
  errors: Type.Integer(),
  errorRate: Type.Union([Type.Number(), Type.Null()]),
  p99Ms: Type.Union([Type.Number(), Type.Null()]),
})
export type SideFigures = Static<typeof SideFigures>

/** A shadow step's figures of `to`: its answers to the copies and how they compared with `from`'s. */
export const ShadowResult = Type.Object({
  compared: Type.Integer(),
  mismatches: Type.Object({ status: Type.Integer(), body: Type.Integer() }),
  mismatchRate: Type.Union([Type.Number(), Type.Null()]),
  skipped: Type.Object({ body: Type.Integer(), busy: Type.Integer() }),
  samples: Type.Array(
    Type.Object({
      at: Type.Integer(),
      method: Type.String(),
      path: Type.String(),
      kind: Type.Union([Type.Literal('status'), Type.Literal('body')]),
      status: Type.Integer(),
      shadowStatus: Type.Integer(),
      jsonPath: Type.Optional(Type.String()),
    }),
  ),
})
export type ShadowResult = Static<typeof ShadowResult>

/**
 * The last analysis: `to`'s figures at the top (as `rollout status` shows them), `from`'s beside.
 * In a shadow step `to`'s figures are its answers to the copies, and `shadow` says how they compared.
 */
export const AnalysisResult = Type.Object({
  verdict: Verdict,
  errorRate: Type.Union([Type.Number(), Type.Null()]),
  p99Ms: Type.Union([Type.Number(), Type.Null()]),
  requests: Type.Integer(),
  /** failed analyses so far in this rollout */
  failures: Type.Integer(),
  from: Type.Optional(SideFigures),
  shadow: Type.Optional(ShadowResult),
  /** why, in words: which bound failed, or how many requests were missing */
  reason: Type.String(),
  at: Type.Integer({ description: 'epoch ms' }),
  windowMs: Type.Integer(),
})
export type AnalysisResult = Static<typeof AnalysisResult>

export const HistoryEntry = Type.Object({
  at: Type.Integer({ description: 'epoch ms' }),
  event: RolloutEvent,
  stepIndex: Type.Integer(),
  weight: Type.Integer(),
  verdict: Type.Optional(Verdict),
  message: Type.String(),
})
export type HistoryEntry = Static<typeof HistoryEntry>

/** `state.rollouts[id]`. */
export const Rollout = Type.Object({
  id: Name,
  route: Name,
  from: Name,
  to: Name,
  strategy: Strategy,
  phase: Phase,
  /** index into `spec.steps` (canary); 0 for blue-green until the switch, then 1 */
  stepIndex: Type.Integer(),
  /** `to`'s weight now, percent */
  weight: Type.Integer(),
  /** the last analysis, null before the first */
  analysis: Type.Union([AnalysisResult, Type.Null()]),
  /** what the rollout is doing or waiting for, in words (e.g. `inconclusive: 12 of 50 requests`) */
  message: Type.String(),
  /** epoch ms */
  createdAt: Type.Integer(),
  updatedAt: Type.Integer(),
  /** when the current step's weight took effect (pauses count from here) */
  stepStartedAt: Type.Integer(),
  /** set while paused by `pause`: how much of the step's pause was left */
  pausedRemainingMs: Type.Optional(Type.Integer()),
  /** an abort ramping back over `abort.rampMs`: the weight it started from and when */
  ramp: Type.Optional(Type.Object({ fromWeight: Type.Integer(), startedAt: Type.Integer() })),
  /** the body it was started with, defaults filled in (notify URLs and secrets are kept, and shown redacted) */
  spec: RolloutSpec,
  /** newest last, at most 100 entries */
  history: Type.Array(HistoryEntry),
})
export type Rollout = Static<typeof Rollout>

/** Phases a rollout never leaves. */
export function isFinished(phase: Phase): boolean {
  return phase === 'promoted' || phase === 'aborted' || phase === 'failed'
}
