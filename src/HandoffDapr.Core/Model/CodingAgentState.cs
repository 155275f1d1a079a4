using System.Text.Json.Serialization;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Model;

/// <summary>One launched agent, in the shape of Sentry's <c>ExplorerCodingAgentState</c>.</summary>
public sealed record CodingAgentState(
    string Id,
    CodingAgentStatus Status,
    string? AgentUrl,
    string Provider,
    string Name,
    DateTimeOffset StartedAt,
    IReadOnlyList<CodingAgentResult> Results);

public sealed record CodingAgentResult(
    string? Description,
    string RepoProvider,
    string RepoFullName,
    string? BranchName,
    string? PrUrl);

[JsonConverter(typeof(SnakeCaseEnumConverter<CodingAgentStatus>))]
public enum CodingAgentStatus
{
    Pending,
    Running,
    Completed,
    Failed,
}

public static class CodingAgentStatusExtensions
{
    /// <summary>The status as it is written on the wire: <c>pending</c>, <c>running</c>, <c>completed</c>, <c>failed</c>.</summary>
    public static string WireName(this CodingAgentStatus status) => status switch
    {
        CodingAgentStatus.Pending => "pending",
        CodingAgentStatus.Running => "running",
        CodingAgentStatus.Completed => "completed",
        _ => "failed",
    };

    public static bool IsFinal(this CodingAgentStatus status) =>
        status is CodingAgentStatus.Completed or CodingAgentStatus.Failed;

    /// <summary>Status only moves forward: pending → running → completed|failed.</summary>
    public static bool CanMoveTo(this CodingAgentStatus from, CodingAgentStatus to) =>
        !from.IsFinal() && Rank(to) > Rank(from);

    private static int Rank(CodingAgentStatus status) => status switch
    {
        CodingAgentStatus.Pending => 0,
        CodingAgentStatus.Running => 1,
        _ => 2,
    };
}
