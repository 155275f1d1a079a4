namespace HandoffDapr.FakeSidecar;

/// <summary>Settings of a <see cref="FakeDaprSidecar"/>; every default is what a plain <c>dapr run</c> gives.</summary>
public sealed class FakeSidecarOptions
{
    /// <summary>
    /// daprd's <c>DAPR_API_TOKEN</c>: when set, every call from the app must carry <c>dapr-api-token</c>
    /// (HTTP 401 "invalid api token", gRPC Unauthenticated) except <c>GET v1.0/healthz[/outbound]</c>
    /// (dapr/dapr pkg/api/http/middlewares.go, pkg/api/grpc/auth.go).
    /// </summary>
    public string? ApiToken { get; set; }

    /// <summary>
    /// daprd's own readiness (its <c>readyStatus</c>): while false, <c>GET v1.0/healthz</c> answers 500
    /// <c>ERR_HEALTH_NOT_READY</c> "dapr is not ready" (pkg/api/http/http.go onGetHealthz, pkg/messages/predefined.go);
    /// every other call is served as before. May be changed while the sidecar runs.
    /// </summary>
    public bool Ready { get; set; } = true;

    /// <summary>daprd's <c>APP_API_TOKEN</c>: when set, the sidecar sends <c>dapr-api-token</c> on every call into the app.</summary>
    public string? AppApiToken { get; set; }

    /// <summary>The app id (<c>--app-id</c>); used as CloudEvent <c>source</c> and in metadata.</summary>
    public string AppId { get; set; } = "handoff";

    /// <summary>Pub/sub components that exist (publishing to another name fails like daprd: "pubsub X is not found").</summary>
    public IList<string> PubSubNames { get; } = new List<string> { "pubsub" };

    /// <summary>Key/value state stores for <c>DaprClient</c> GetState/SaveState.</summary>
    public IList<string> StateStoreNames { get; } = new List<string> { "statestore" };

    /// <summary>
    /// The state stores' component type, as metadata reports it, and how the actor state store treats a TTL:
    /// <c>state.redis</c> (components/, k8s/) keeps a key's expiry on a write without <c>ttlInSeconds</c> and persists
    /// the key for 0 or below; any other type, as SQL Server, MongoDB and DynamoDB do, expires a key at now + ttl
    /// whatever its sign ("-1": a second ago) and clears the expiry on a write without one.
    /// </summary>
    public string StateStoreType { get; set; } = "state.redis";

    /// <summary>
    /// State stores of other types that could hold actors too (name → type), only listed in metadata: daprd with more
    /// components loaded, which its metadata does not say is the actor state store.
    /// </summary>
    public IDictionary<string, string> OtherStateStores { get; } = new Dictionary<string, string>();

    /// <summary>
    /// With a <c>deadLetterTopic</c> and no inbound resiliency retry policy, daprd sends an event whose delivery
    /// failed in a retriable way (RETRY, 5xx) straight to the dead-letter topic (pkg/runtime/subscription/subscription.go).
    /// Set false to model a resiliency policy that keeps retrying instead.
    /// </summary>
    public bool DeadLetterRetriableFailures { get; set; } = true;

    /// <summary>
    /// daprd's resiliency policy (retry and circuit breaker) for calls to an actor type, by type name; a type with none
    /// is called once, as daprd does without a resiliency spec for it (its built-in retries only cover placement lookups).
    /// </summary>
    public IDictionary<string, ActorCallPolicy> ActorCallPolicies { get; } = new Dictionary<string, ActorCallPolicy>(StringComparer.Ordinal);

    /// <summary>
    /// What a deactivation (<see cref="FakeDaprSidecar.DeactivateActorAsync"/>: idle timeout, rebalancing, shutdown, a lost
    /// placement stream) does to a call of the actor still in progress. True, as daprd 1.16.2+ and 1.17 do: it does not
    /// wait; the call's request to the app is cancelled (its attempt fails with <c>context canceled</c> and is retried by
    /// the type's <see cref="ActorCallPolicy"/>, a reminder's delivery fails and the Scheduler retries it), calls waiting for
    /// the turn fail with <c>actor lock is closed</c>, and the DELETE is sent while the app's method may still run
    /// (targets/app/app.go Deactivate, targets/app/lock/lock.go Close, whose context argument is unused). False: the
    /// fake's former behaviour, the deactivation waits for the call in progress (daprd 1.16.0-1.16.1's lock.go Close took
    /// the lock first, with drainOngoingCallTimeout for rebalanced actors only).
    /// </summary>
    public bool DeactivationCancelsCalls { get; set; } = true;

    /// <summary>
    /// Whether a GET of actor state reports the key's expiry (<c>Metadata.ttlExpireTime</c>, which the .NET SDK keeps with
    /// its cached value and reads as absent once past). daprd copies the store's GetResponse.Metadata into these headers
    /// (pkg/api/http/actors.go onGetActorState, pkg/actors/state/state.go Get), and the Redis store (state.redis, what
    /// components/ and k8s/ use) returns none (components-contrib state/redis/redis.go getDefault): off by default.
    /// Some other stores do report it.
    /// </summary>
    public bool StateStoreReportsTtlExpireTime { get; set; }

    /// <summary>
    /// daprd's <c>ActorStateTTL</c> preview feature (a Configuration's <c>spec.features</c>). Off, as a plain
    /// <c>dapr run</c> has it, an actor state transaction whose upsert carries <c>ttlInSeconds</c> metadata (any value, even
    /// empty) is refused with 500 ERR_ACTOR_STATE_TRANSACTION_SAVE "ttlInSeconds is not supported without the
    /// "ActorStateTTL" feature enabled", and nothing of it is saved (pkg/actors/api/transactional.go
    /// TransactionalUpsert.StateOperation, fed by pkg/runtime/runtime.go from IsFeatureEnabled(ActorStateTTL); still so at HEAD).
    /// </summary>
    public bool ActorStateTtlEnabled { get; set; }

    /// <summary>
    /// Whether the state store refuses a <c>ttlInSeconds</c> below -1, as the stores that read it with
    /// components-contrib's state/utils ParseTTL do ("incorrect value for metadata 'ttlInSeconds': must be -1 or
    /// greater": PostgreSQL, MySQL, SQL Server, Cosmos DB, MongoDB, etcd, SQLite, Cassandra among them), and nothing of
    /// the transaction is saved. Off, as the Redis store (components/, k8s/) has it: any value of 0 or below persists
    /// the key.
    /// </summary>
    public bool StateStoreRefusesTtlBelowMinusOne { get; set; }

    /// <summary>Clock for reminder registration times, CloudEvent <c>time</c> and actor circuit breakers.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Base address the app is reached at through <see cref="FakeDaprSidecar.AppChannel"/> (daprd: http://127.0.0.1:{app-port}).</summary>
    public Uri AppBaseAddress { get; set; } = new("http://localhost");

    /// <summary>
    /// The loopback ports to listen on (0: chosen by the OS). Set to a stopped sidecar's ports to model daprd restarting
    /// where the app expects it (<c>DAPR_HTTP_ENDPOINT</c>, <c>DAPR_GRPC_ENDPOINT</c> do not change).
    /// </summary>
    public int HttpPort { get; set; }

    /// <inheritdoc cref="HttpPort"/>
    public int GrpcPort { get; set; }

    /// <summary>Runtime version reported by the metadata APIs.</summary>
    public string RuntimeVersion { get; set; } = "1.16.0-fake";
}
