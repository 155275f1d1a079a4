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
    IReadOnlyList<RefusedRepositoryView> Refused,
    IReadOnlyList<TimelineEntry> Timeline)
{
    /// <summary>The view as the API writes it (<paramref name="http"/>: the HTTP JSON options), ready to be stored and sent.</summary>
    public static byte[] Json(RunHandoffState state, JsonSerializerOptions http) =>
        JsonSerializer.SerializeToUtf8Bytes(From(state), (System.Text.Json.Serialization.Metadata.JsonTypeInfo<RunHandoffView>)http.GetTypeInfo(typeof(RunHandoffView)));

    public static RunHandoffView From(RunHandoffState state) => new(
        state.RunId,
        state.GroupId,
        state.CodingAgents,
        state.Launches.Select(LaunchView.From).ToList(),
        // Derived at each build, not stored: a redelivered event must change nothing, and the timeline is bounded.
        HandoffEngine.Refusals(state.Snapshot).Select(RefusedRepositoryView.From).ToList(),
        state.Timeline);
}

/// <summary>
/// A repository of the run's snapshot that no handoff launches (<see cref="HandoffEngine.Refusals"/>), and why:
/// <see cref="Repository"/> is null for <c>no_repositories</c>, and a rejected name is printable and bounded, never raw.
/// </summary>
public sealed record RefusedRepositoryView(string? Repository, string FailureType)
{
    public static RefusedRepositoryView From(LaunchFailure failure) => new(failure.RepoName, failure.FailureType);
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
        JsonSerializer.SerializeToUtf8Bytes(new DaprEventReply(status), ServiceJsonContext.Default.DaprEventReply), ServiceJsonContext.ContentType);
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
internal sealed partial class ServiceJsonContext : JsonSerializerContext
{
    /// <summary>The content type of a JSON answer written as bytes, as the framework writes one it serialises itself.</summary>
    public const string ContentType = "application/json; charset=utf-8";

    /// <summary>The API's answers: snake_case, source-generated, strict numbers.</summary>
    public static void ConfigureHttp(JsonSerializerOptions options)
    {
        options.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        // As the request readers (source-generated, strict): the OpenAPI document must not offer numbers as strings.
        options.NumberHandling = JsonNumberHandling.Strict;
        options.TypeInfoResolverChain.Insert(0, Default);
        options.TypeInfoResolverChain.Insert(1, HandoffJsonContext.Default);
    }
}
