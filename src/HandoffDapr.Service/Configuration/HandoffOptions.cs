using HandoffDapr.Core.Handoff;

namespace HandoffDapr.Service.Configuration;

/// <summary>The <c>Handoff</c> configuration section. Every key is also an environment variable (<c>Handoff__Mode</c>).</summary>
public sealed class HandoffOptions
{
    public const string SectionName = "Handoff";

    /// <summary><c>Embedded</c>, <c>Dapr</c>, or empty to choose by the sidecar's environment.</summary>
    public string? Mode { get; set; }

    /// <summary>SQLite file of embedded mode.</summary>
    public string DataPath { get; set; } = "data/handoff.db";

    /// <summary>Base of the webhook URLs sent to providers, e.g. <c>https://handoff.example.com</c>.</summary>
    public string? PublicBaseUrl { get; set; }

    /// <summary>At shutdown, how long provider calls under way may still answer in this mode.</summary>
    public TimeSpan ProviderCallGraceIn(HostingMode mode) => mode == HostingMode.Dapr ? Dapr.EffectiveProviderCallGrace : Embedded.ProviderCallGrace;

    /// <summary>At shutdown, how long requests and launch rounds in progress may still run and record their answers in this mode.</summary>
    public TimeSpan ShutdownWaitIn(HostingMode mode) => mode == HostingMode.Dapr ? Dapr.ShutdownDrain : Embedded.ShutdownWait;

    /// <summary>
    /// Largest request body accepted on any endpoint but two of Dapr mode's: an actor call carries a run as the SDK
    /// escapes it, and a dead letter may be an event refused for its size; both take six times this plus 1 MiB
    /// (<see cref="Extensions.HandoffServiceExtensions.ActorCallBodyLimit"/>).
    /// </summary>
    public long MaxRequestBodyBytes { get; set; } = 1024 * 1024;

    public int MaxInstructionLength { get; set; } = 4096;

    public Dictionary<string, IntegrationOptions> Integrations { get; set; } = new();

    public DaprOptions Dapr { get; set; } = new();

    public LaunchOptions Launch { get; set; } = new();

    public EmbeddedOptions Embedded { get; set; } = new();

    public RateLimitOptions RateLimits { get; set; } = new();

    /// <summary>Embedded mode: bearer token API callers must send. Without one, only loopback callers are accepted.</summary>
    public string? ApiToken { get; set; }

    /// <summary>
    /// How long a settled run (nothing pending) is kept after its last change before it is deleted; unset (the default)
    /// keeps every run for good. See <see cref="Core.Handoff.RunRetention"/>.
    /// </summary>
    public TimeSpan? RunRetention { get; set; }

    /// <summary>The least and most <see cref="RunRetention"/> may be.</summary>
    public static readonly TimeSpan MinRunRetention = TimeSpan.FromHours(1), MaxRunRetention = TimeSpan.FromDays(3650);
}

public sealed class RateLimitOptions
{
    public int TriggersPerGroupPerMinute { get; set; } = 60;
    public int WebhooksPerIntegrationPerMinute { get; set; } = 600;
}

public sealed class IntegrationOptions
{
    /// <summary>Provider type: one of <see cref="Hosting.ProviderKinds"/>' names (<c>cursor_background_agent</c>, <c>github_copilot_agent</c>).</summary>
    public string? Provider { get; set; }

    /// <summary>Provider API base; empty for the provider's public API.</summary>
    public string? BaseUrl { get; set; }

    /// <summary>The API this integration calls; null when neither a <c>BaseUrl</c> nor a known <c>Provider</c> says.</summary>
    public string? EffectiveBaseUrl => !string.IsNullOrWhiteSpace(BaseUrl) ? BaseUrl : Hosting.ProviderKinds.Find(Provider)?.PublicApi;

    /// <summary>Embedded mode only: in Dapr mode the output binding holds the key.</summary>
    public string? ApiKey { get; set; }

    /// <summary>HMAC secret of this integration's webhooks (Cursor requires at least 32 characters).</summary>
    public string? WebhookSecret { get; set; }

    /// <summary>Dapr mode: the output binding that reaches this integration's provider.</summary>
    public string? Binding { get; set; }

    /// <summary>Whether a manual trigger that does not say asks the agent to open a pull request.</summary>
    public bool AutoCreatePr { get; set; } = true;

    /// <summary>The provider's model, when not its default.</summary>
    public string? Model { get; set; }

    /// <summary>The longest prompt sent to this provider; artifact text is cut to fit.</summary>
    public int PromptMaxLength { get; set; } = Core.Prompts.PromptBuilder.DefaultMaxLength;

    /// <summary>Embedded mode: how long one provider call may take.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);
}

public sealed class DaprOptions
{
    /// <summary>Not read at run time: the app id <c>dapr.yaml</c> and <c>k8s/</c> use (a contract test keeps <c>appsettings.json</c>'s value and them in agreement).</summary>
    public string AppId { get; set; } = "handoff";
    public string PubSubName { get; set; } = "pubsub";

    /// <summary>
    /// The actor state store's component name (Dapr picks it by <c>actorStateStore</c>; a contract test keeps
    /// <c>appsettings.json</c>'s value and <c>components/</c> and <c>k8s/</c> in agreement). Read only to learn its
    /// type from daprd's metadata, which says how a run's TTL is taken off (<see cref="DaprHost.ActorStateTtl"/>), when
    /// several stores of different types could hold actors.
    /// </summary>
    public string StateStoreName { get; set; } = "statestore";
    public string CompletionTopic { get; set; } = "autofix-run-completed";
    public string DeadLetterTopic { get; set; } = "autofix-run-completed-deadletter";
    public string UpdatesTopic { get; set; } = "handoff.coding-agents.updated";

    /// <summary>How long start-up waits for the sidecar.</summary>
    public TimeSpan SidecarWaitTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a call to a run's actor may take before the caller gets a 503 (an event: RETRY). Above the resiliency
    /// policy's <c>actorCall</c> (120 s), so daprd's own timeout decides first; without it the SDK's HttpClient gives up
    /// at 100 s.
    /// </summary>
    public TimeSpan ActorCallTimeout { get; set; } = TimeSpan.FromSeconds(130);

    /// <summary>
    /// At shutdown, how long actor calls in progress may still run (and the server keep listening) before the app
    /// stops. Below the pod's <c>dapr.io/block-shutdown-duration</c> (45 s), during which daprd keeps its APIs up.
    /// </summary>
    public TimeSpan ShutdownDrain { get; set; } = TimeSpan.FromSeconds(40);

    /// <summary>
    /// At shutdown, how long provider calls under way (a launch round's, a poll's, a stop's) may still answer before
    /// they are stopped and their outcomes recorded as unknown; 0 stops them at once. Cut to leave the last
    /// <see cref="RecordingTime"/> of <see cref="ShutdownDrain"/> for recording the answers (<see cref="EffectiveProviderCallGrace"/>).
    /// </summary>
    public TimeSpan ProviderCallGrace { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The end of the shutdown drain kept for recording what the provider calls answered.</summary>
    public static readonly TimeSpan RecordingTime = TimeSpan.FromSeconds(5);

    /// <summary>The grace as applied: never into the drain's last <see cref="RecordingTime"/>.</summary>
    public TimeSpan EffectiveProviderCallGrace
    {
        get
        {
            var room = ShutdownDrain - RecordingTime;
            return room <= TimeSpan.Zero ? TimeSpan.Zero : ProviderCallGrace < room ? ProviderCallGrace : room;
        }
    }
}

/// <summary>The engine's settings as configured; each default is the engine's own, so it is written once, in the core.</summary>
public sealed class LaunchOptions
{
    private static readonly HandoffEngineOptions EngineDefaults = new();

    public int MaxParallelLaunches { get; set; } = EngineDefaults.MaxParallelLaunches;
    public TimeSpan InFlightTimeout { get; set; } = EngineDefaults.InFlightTimeout;
    public int MaxRepositories { get; set; } = EngineDefaults.MaxRepositories;
    public TimeSpan RetryBaseDelay { get; set; } = EngineDefaults.Retry.BaseDelay;
    public double RetryFactor { get; set; } = EngineDefaults.Retry.Factor;
    public TimeSpan RetryMaxDelay { get; set; } = EngineDefaults.Retry.MaxDelay;
    public int MaxAttempts { get; set; } = EngineDefaults.Retry.MaxAttempts;
    public TimeSpan PollInterval { get; set; } = EngineDefaults.PollInterval;
    public TimeSpan PollMaxInterval { get; set; } = EngineDefaults.PollMaxInterval;
    public TimeSpan AgentMaxAge { get; set; } = EngineDefaults.AgentMaxAge;

    public HandoffEngineOptions ToEngineOptions() => new()
    {
        MaxParallelLaunches = MaxParallelLaunches,
        InFlightTimeout = InFlightTimeout,
        MaxRepositories = MaxRepositories,
        Retry = new RetryOptions { BaseDelay = RetryBaseDelay, Factor = RetryFactor, MaxDelay = RetryMaxDelay, MaxAttempts = MaxAttempts },
        PollInterval = PollInterval,
        PollMaxInterval = PollMaxInterval,
        AgentMaxAge = AgentMaxAge,
    };
}

public sealed class EmbeddedOptions
{
    /// <summary>How often the schedule table is checked for due wake-ups (retries, reconciliations, status polls).</summary>
    public TimeSpan SchedulePollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// A completion event is answered once its launches are saved as due; the schedule makes the provider calls
    /// right after. The sender waits for a SQLite commit, not for the provider. False: launch within the request.
    /// </summary>
    public bool LaunchEventsInBackground { get; set; } = true;

    /// <summary>Runs the schedule works on at once (each makes its repositories' provider calls in parallel).</summary>
    public int MaxConcurrentWakeups { get; set; } = 32;

    /// <summary>
    /// How many runs' handled completion events this process remembers, to answer a redelivery without reading the
    /// file (about 100 bytes each); 0 reads the file for each. Another process's writes to the file are seen within
    /// 100 ms; until then a redelivery is judged by what this process wrote last.
    /// </summary>
    public int RememberedEvents { get; set; } = 65_536;

    /// <summary>How long a claimed wake-up stays owned by this process before another may take it.</summary>
    public TimeSpan ScheduleLease { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// At shutdown, how long provider calls under way (a launch round's, a poll's, a stop's) may still answer before
    /// they are stopped and their outcomes recorded as unknown; 0 stops them at once. The host waits for them.
    /// </summary>
    public TimeSpan ProviderCallGrace { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>How long shutdown waits for requests and scheduled runs in progress: the grace, then time to record the answers.</summary>
    public TimeSpan ShutdownWait => ProviderCallGrace + DaprOptions.RecordingTime;
}
