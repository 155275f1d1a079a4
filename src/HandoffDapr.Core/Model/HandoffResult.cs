namespace HandoffDapr.Core.Model;

/// <summary>What a trigger did, per repository, in the order of the run's repositories.</summary>
public sealed record HandoffResult(
    IReadOnlyList<LaunchSuccess> Successes,
    IReadOnlyList<LaunchFailure> Failures,
    IReadOnlyList<ScheduledRetry> Retries)
{
    public static readonly HandoffResult Empty = new([], [], []);
}

public sealed record LaunchSuccess(string RepoName, CodingAgentState CodingAgentState);

/// <summary>A failed repository. <see cref="ErrorMessage"/> is always one of <see cref="FailureMessages"/>: never provider or exception text.</summary>
public sealed record LaunchFailure(string? RepoName, string ErrorMessage, string FailureType);

/// <summary>
/// A repository whose launch will be attempted (again) at <see cref="RetryAt"/>. <see cref="FailureType"/> is why the
/// last attempt failed; null when none has failed yet (a completion event's launch not yet made, or its first attempt
/// in flight; a later attempt in flight still shows why the one before it failed).
/// </summary>
public sealed record ScheduledRetry(string RepoName, DateTimeOffset RetryAt, int Attempt, string? FailureType);

public static class FailureMessages
{
    public const string LaunchFailed = "Failed to launch coding agent";
    public const string NoRepositories = "No repositories found in run state";
    public const string InvalidRepositoryPrefix = "Invalid repository name format: ";
    public const string TooManyRepositoriesPrefix = "A handoff covers at most this many repositories: ";
    public const string TooManyGenerationsPrefix = "A repository is launched at most this many times in a run: ";
    public const string UnsupportedRepositoryHost = "Only GitHub repositories can be handed off";
    public const string InvalidBaseBranch = "Invalid base branch name";
}

/// <summary>The stable <c>failure_type</c> values clients may switch on.</summary>
public static class FailureTypes
{
    public const string InvalidCredentials = "invalid_credentials";
    public const string RepositoryAccess = "repository_access";
    public const string RateLimited = "rate_limited";
    public const string ProviderUnavailable = "provider_unavailable";
    public const string InvalidRequest = "invalid_request";
    public const string InvalidResponse = "invalid_response";
    public const string RetriesExhausted = "retries_exhausted";
    public const string InvalidRepository = "invalid_repository";
    public const string NoRepositories = "no_repositories";
    public const string TooManyRepositories = "too_many_repositories";
    public const string TooManyGenerations = "too_many_generations";
    public const string ReconcileIncomplete = "reconcile_incomplete";
    public const string TimedOut = "timed_out";
    public const string AgentFailed = "agent_failed";
    public const string NotSupported = "not_supported";
    public const string NoCopilotLicense = "no_copilot_license";
    public const string QuotaExceeded = "quota_exceeded";

    /// <summary>A relaunch dropped before it reached the provider: the agent it was to replace finished after all.</summary>
    public const string Superseded = "superseded";
}
