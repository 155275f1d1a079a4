namespace HandoffDapr.Core.Handoff;

public sealed record HandoffEngineOptions
{
    /// <summary>
    /// Provider calls for one run that may be under way together: a launch round's launches and lookups, and also a
    /// status poll's reads and the stops of the agents it gave up on.
    /// </summary>
    public int MaxParallelLaunches { get; init; } = 16;

    /// <summary>
    /// How long a launch may stay in flight before its owner assumes the process died and reconciles. Also a status poll's
    /// lease: a poll whose reports are not recorded by then is made again.
    /// </summary>
    public TimeSpan InFlightTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>The most repositories one run may hand off.</summary>
    public int MaxRepositories { get; init; } = 50;

    /// <summary>
    /// The most launches of one repository in a run (its generations, from any integration): a person's trigger after
    /// the last one's agent failed is refused <c>too_many_generations</c>. Each generation is kept in the run's state with
    /// its agent, and every turn reads and writes the whole state: without a cap a run retried over and over outgrew what
    /// daprd takes in one save (8 MiB as deployed), and was refused from then on.
    /// </summary>
    public int MaxGenerations { get; init; } = DefaultMaxGenerations;

    public const int DefaultMaxGenerations = 10;

    public RetryOptions Retry { get; init; } = new();

    /// <summary>First interval of the status poll that covers lost webhooks; it doubles while nothing changes.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMinutes(1);

    public TimeSpan PollMaxInterval { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>An agent still pending or running after this long is given up on: failed with <c>timed_out</c>.</summary>
    public TimeSpan AgentMaxAge { get; init; } = TimeSpan.FromHours(6);
}
