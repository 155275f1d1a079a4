using System.Text.Json.Serialization;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Providers;

/// <summary>A coding-agent provider (Cursor background agents, GitHub Copilot agent tasks), bound to one integration.</summary>
public interface ICodingAgentProvider
{
    /// <summary>The provider's name in <c>coding_agents</c>, e.g. <c>cursor_background_agent</c>.</summary>
    string ProviderName { get; }

    /// <summary>At most how many characters the provider adds to a launch's prompt: the prompt is built that much shorter.</summary>
    int PromptReserve => 0;

    Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken);

    Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken);

    /// <summary>
    /// Finds the agent a launch on <paramref name="branchName"/> created, to reconcile a launch whose answer was lost: by its
    /// branch, or (Copilot, which names branches itself) by the handoff reference its prompt ends with.
    /// </summary>
    /// <param name="firstSentAt">
    /// When the first attempt that may have created it started (<see cref="Handoff.RepositoryLaunch.FirstAttemptAt"/>),
    /// if known: no agent of the launch is older.
    /// </param>
    Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken);

    /// <summary>
    /// Whether <see cref="FindAgentByBranchAsync"/> matches the branch the launch asked for (Cursor), rather than a
    /// reference in the prompt (Copilot): an agent put on a branch of the provider's naming then cannot be found.
    /// </summary>
    bool FindsAgentsByBranch => true;

    /// <summary>Whether <see cref="StopAsync"/> can stop an agent at all (GitHub's agent tasks cannot): a poll stops again an agent given up on only where it can.</summary>
    bool CanStop => true;

    Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken);

    Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken);
}

public sealed record AgentLaunchRequest(
    string Prompt,
    RepositoryName Repository,
    string? BaseRef,
    string BranchName,
    bool AutoCreatePr,
    AgentWebhook? Webhook);

public sealed record AgentWebhook(Uri Url, string Secret);

/// <summary>An agent as the provider reports it, already translated out of the provider's wire format.</summary>
/// <param name="Repository">
/// The repository the report says the agent works on: <c>owner/name</c> when it names a GitHub repository, else what it
/// names, made printable and short; null when it names none (GitHub's tasks, or an answer without a source).
/// </param>
public sealed record ProviderAgent(
    string Id,
    ProviderAgentStatus Status,
    string? Name = null,
    string? AgentUrl = null,
    string? BranchName = null,
    string? PrUrl = null,
    string? Summary = null,
    DateTimeOffset? CreatedAt = null,
    string? Repository = null);

[JsonConverter(typeof(SnakeCaseEnumConverter<ProviderAgentStatus>))]
public enum ProviderAgentStatus
{
    Creating,
    Running,
    Finished,
    Error,
    Expired,
    Stopped,
    Unknown,
}

public static class ProviderAgentStatuses
{
    /// <summary>The provider shows the agent's work ended: finished, or failed, expired or stopped.</summary>
    public static bool HasEnded(this ProviderAgentStatus status) =>
        status is ProviderAgentStatus.Finished or ProviderAgentStatus.Error or ProviderAgentStatus.Expired or ProviderAgentStatus.Stopped;
}

/// <summary>Why a provider call failed, reduced to what the handoff decides on. Never carries provider text.</summary>
/// <param name="OutcomeUnknown">The provider may have acted: reconcile before trying again.</param>
/// <param name="RequestSent">False when nothing reached the provider (an open circuit, a refused connection).</param>
/// <param name="Attempted">
/// False when no call was made at all (an open circuit, a request refused before sending): the retry spends no
/// attempt. A refused connection was an attempt: the provider was tried and could not be reached.
/// </param>
public sealed record ProviderFailure(
    string FailureType,
    bool Retryable,
    bool OutcomeUnknown = false,
    TimeSpan? RetryAfter = null,
    int? StatusCode = null,
    bool RequestSent = true,
    bool Attempted = true);

public readonly record struct ProviderResult<T>
{
    private ProviderResult(T? value, ProviderFailure? failure)
    {
        Value = value;
        Failure = failure;
    }

    public T? Value { get; }
    public ProviderFailure? Failure { get; }
    public bool IsSuccess => Failure is null;

    public static ProviderResult<T> Success(T value) => new(value, null);
    public static ProviderResult<T> Failed(ProviderFailure failure) => new(default, failure);
}
