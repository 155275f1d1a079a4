using System.Text.Json;
using System.Text.Json.Serialization;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.DaprHost;
using Microsoft.AspNetCore.Mvc;

namespace HandoffDapr.Service.Api;

/// <summary>Body of <c>POST /runs/{runId}/handoff</c>.</summary>
public sealed record HandoffRequest(
    long? GroupId,
    long? IntegrationId,
    string? Instruction = null,
    bool? AutoCreatePr = null,
    RunSnapshot? Run = null);

/// <summary>Answer of <c>GET /runs/{runId}/handoff</c>.</summary>
public sealed record RunHandoffView(
    long RunId,
    long? GroupId,
    IReadOnlyDictionary<string, CodingAgentState> CodingAgents,
    IReadOnlyList<LaunchView> Launches,
    IReadOnlyList<TimelineEntry> Timeline)
{
    public static RunHandoffView From(RunHandoffState state) => new(
        state.RunId,
        state.GroupId,
        state.CodingAgents,
        state.Launches.Select(LaunchView.From).ToList(),
        state.Timeline);
}

/// <summary>
/// A repository's launch as clients see it (the stored instruction stays inside). <see cref="Generation"/> counts the
/// repository's launches in the run from 1: a repository whose agent failed and was launched again has one entry per generation.
/// </summary>
public sealed record LaunchView(
    string Repository,
    long IntegrationId,
    string Provider,
    int Generation,
    string BranchName,
    LaunchPhase Phase,
    int Attempts,
    DateTimeOffset? NextAttemptAt,
    string? AgentId,
    string? FailureType,
    DateTimeOffset UpdatedAt)
{
    public static LaunchView From(RepositoryLaunch launch) => new(
        launch.Repository,
        launch.IntegrationId,
        launch.Provider,
        launch.Generation,
        launch.BranchName,
        launch.Phase,
        launch.Attempts,
        launch.IsAwaitingWork ? launch.NextAttemptAt : null,
        launch.AgentId,
        launch.FailureType,
        launch.UpdatedAt);
}

/// <summary>Reply to daprd for a delivered event (the pub/sub subscription contract).</summary>
public sealed record DaprEventReply(string Status)
{
    // The three answers, serialised once: one is written for every delivery.
    public static readonly IResult Success = Reply("SUCCESS"), Retry = Reply("RETRY"), Drop = Reply("DROP");

    private static IResult Reply(string status) => TypedResults.Bytes(
        JsonSerializer.SerializeToUtf8Bytes(new DaprEventReply(status), ServiceJsonContext.Default.DaprEventReply), "application/json; charset=utf-8");
}

// Request bodies: a property named twice (in any case) is a 400, not read last-wins.
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, PropertyNameCaseInsensitive = true, MaxDepth = 32, AllowDuplicateProperties = false)]
[JsonSerializable(typeof(HandoffRequest))]
[JsonSerializable(typeof(RunHandoffView))]
[JsonSerializable(typeof(IReadOnlyList<RunHandoffView>))]
[JsonSerializable(typeof(HandoffResult))]
[JsonSerializable(typeof(DaprEventReply))]
[JsonSerializable(typeof(FollowupRequest))]
[JsonSerializable(typeof(CodingAgentState))]
[JsonSerializable(typeof(CodingAgentsUpdated))]
[JsonSerializable(typeof(ProblemDetails))]
[JsonSerializable(typeof(HttpValidationProblemDetails))]
internal sealed partial class ServiceJsonContext : JsonSerializerContext;
