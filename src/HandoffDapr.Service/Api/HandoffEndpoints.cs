using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Security;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Api;

/// <summary><c>/runs</c>: the most recently changed runs; <c>/runs/{runId}/handoff</c>: the manual trigger and the run's handoff state.</summary>
public static partial class HandoffEndpoints
{
    /// <summary>
    /// HEAD as well as GET (RFC 9110 §9.1: a general-purpose server supports both); Kestrel sends no body for HEAD. Mapped
    /// apart and left out of the OpenAPI document: one endpoint for both would be two operations there with one
    /// operationId, which OpenAPI requires to be unique (client generators refuse the document).
    /// </summary>
    private static readonly string[] HeadMethod = [HttpMethods.Head];

    public static IEndpointRouteBuilder MapHandoffEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapGet("/runs", ListAsync).WithTags("Handoff").WithName("ListRecentRuns")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        app.MapMethods("/runs", HeadMethod, ListAsync).ExcludeFromDescription();
        var runs = app.MapGroup("/runs/{runId}").WithTags("Handoff");
        runs.MapPost("/handoff", TriggerAsync).WithName("TriggerHandoff")
            .AcceptsJson<HandoffRequest>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status408RequestTimeout)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        runs.MapGet("/handoff", GetAsync).WithName("GetHandoff")
            .Produces<RunHandoffView>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        runs.MapMethods("/handoff", HeadMethod, GetAsync).ExcludeFromDescription();
        return app;
    }

    public static async Task<Results<Accepted<HandoffResult>, ProblemHttpResult, RetryAfterResult>> TriggerAsync(
        string runId, HttpRequest request, [AsParameters] HandoffServices services, TriggerRateLimiter limiter, RefusalLog refusals, CancellationToken cancellationToken)
    {
        if (!RunIds.TryParse(runId, out var id))
        {
            return Problems.InvalidRunId();
        }

        var (body, problem) = await JsonBody.ReadAsync(request, ServiceJsonContext.Default.HandoffRequest, services.Options, cancellationToken);
        if (problem is not null)
        {
            return problem;
        }

        if (Validate(id, body!, services.Options.Value) is { } invalid)
        {
            return Problems.InvalidRequest(invalid);
        }

        if (limiter.TryAcquire(body!.GroupId!.Value) is { } wait)
        {
            // One window for every group: groups are as many as callers name, the log's keys must not be.
            if (refusals.ShouldLog(services.Logger, null, TriggersOverLimit) is { } unlogged)
            {
                LogTriggerRateLimited(services.Logger, id, body.GroupId.Value, limiter.PermitsPerMinute, unlogged);
            }

            return Problems.TriggersRateLimited(wait, limiter.PermitsPerMinute);
        }

        var trigger = new HandoffTrigger(body!.GroupId!.Value, body.IntegrationId!.Value, body.Instruction, body.AutoCreatePr, body.Run);
        TriggerOutcome outcome;
        try
        {
            outcome = await services.Owner.TriggerAsync(id, trigger, cancellationToken);
        }
        catch (RunOwnerUnavailableException exception)
        {
            return OwnerUnavailable(services.Logger, id, exception);
        }

        return outcome.Status switch
        {
            TriggerStatus.Accepted => TypedResults.Accepted($"/runs/{id}/handoff", outcome.Result),
            TriggerStatus.RunDeleted when outcome.DeletedAt is { } deletedAt => Problems.RunDeleted(deletedAt),
            TriggerStatus.UnknownIntegration => Problems.UnknownIntegration(),
            TriggerStatus.SnapshotMismatch => Problems.InvalidRequest("run.run_id must equal the run id in the path."),
            // With run given, only another group's run is unknown (a missing one is stored from it): not told the run
            // needs its snapshot in run, which it sent. A missing run has no such trigger's 404 to look like.
            _ => Problems.UnknownRun(body.Run is null ? UnknownRunContext.Trigger : UnknownRunContext.GroupNamed),
        };
    }

    public static async Task<IResult> GetAsync(
        string runId, string[]? group_id, [AsParameters] HandoffServices services, CancellationToken cancellationToken)
    {
        if (!RunIds.TryParse(runId, out var id))
        {
            return Problems.InvalidRunId();
        }

        // Bound as an array, as limit is: bound as one string, a repeated group_id arrives joined ("456,999") and would
        // be told it is not a whole number.
        long? groupId = null;
        if (group_id is { Length: > 1 })
        {
            return Problems.RepeatedQueryParameter("group_id");
        }

        if (group_id is [var group])
        {
            if (!RunIds.TryParse(group, out var parsedGroup))
            {
                return Problems.InvalidRequest($"group_id must be a positive whole number (at most {WholeIds.Max}).");
            }

            groupId = parsedGroup;
        }

        // Another group's run looks exactly like a run that does not exist.
        bool OtherGroup(long? runGroup) => groupId is { } expected && runGroup != expected;
        var unknown = groupId is null ? UnknownRunContext.NoGroupNamed : UnknownRunContext.GroupNamed;
        try
        {
            if (await services.Owner.GetStoredViewAsync(id, cancellationToken) is { } stored)
            {
                return OtherGroup(stored.GroupId) ? Problems.UnknownRun(unknown) : TypedResults.Bytes(stored.Json, ServiceJsonContext.ContentType);
            }

            var state = await services.Owner.GetAsync(id, cancellationToken);
            if (state is null && await services.Owner.FindDeletedAsync(id, cancellationToken) is { } deleted)
            {
                return OtherGroup(deleted.GroupId) ? Problems.UnknownRun(unknown) : Problems.RunDeleted(deleted.DeletedAt);
            }

            return state is null || OtherGroup(state.GroupId) ? Problems.UnknownRun(unknown) : TypedResults.Ok(RunHandoffView.From(state));
        }
        catch (RunOwnerUnavailableException exception)
        {
            return OwnerUnavailable(services.Logger, id, exception);
        }
    }

    /// <summary>The most recently changed runs (the status page's data), newest first; <c>limit</c> 1–200, default 50.</summary>
    public static async Task<Results<Ok<IReadOnlyList<RunHandoffView>>, ProblemHttpResult>> ListAsync(
        string[]? limit, IRecentRuns recentRuns, ILogger<HandoffServices> logger, CancellationToken cancellationToken)
    {
        // Bound as text and parsed here: the framework's own int binding would answer a bad value with an exception.
        var count = 50L;
        if (limit is { Length: > 1 })
        {
            return Problems.RepeatedQueryParameter("limit");
        }

        if (limit is [var text] && (!RunIds.TryParseDigits(text, out count) || count is < 1 or > 200))
        {
            return Problems.InvalidRequest("limit must be one whole number between 1 and 200.");
        }

        IReadOnlyList<RunHandoffState> runs;
        try
        {
            runs = await recentRuns.ListAsync((int)count, cancellationToken);
        }
        catch (RunOwnerUnavailableException exception)
        {
            LogRecentRunsUnavailable(logger, exception);
            return Problems.RecentRunsUnavailable();
        }

        return TypedResults.Ok<IReadOnlyList<RunHandoffView>>(runs.Select(RunHandoffView.From).ToList());
    }

    private static string? Validate(long runId, HandoffRequest body, HandoffOptions options)
    {
        if (!WholeIds.IsValid(body.GroupId))
        {
            return $"group_id is required and must be a positive whole number (at most {WholeIds.Max}).";
        }

        if (!WholeIds.IsValid(body.IntegrationId))
        {
            return $"integration_id is required and must be a positive whole number (at most {WholeIds.Max}).";
        }

        if (body.Instruction?.Length > options.MaxInstructionLength)
        {
            return $"instruction may be at most {options.MaxInstructionLength} characters.";
        }

        // As for a follow-up's text: one of nothing visible (controls, zero-width characters, spaces) would reach the agent
        // as an instruction it cannot read. Control characters beside visible text pass, as they do there.
        if (body.Instruction is { } instruction && !PrintableText.HasVisible(instruction))
        {
            return "instruction must have a visible character when given (leave it out, or null, for none).";
        }

        if (body.Run is { } run)
        {
            if (run.RunId != runId)
            {
                return "run.run_id must equal the run id in the path.";
            }

            // The caller supplied this run: a group it lacks or does not share is the caller's mistake, not an unknown run.
            if (run.GroupId != body.GroupId)
            {
                return "run must name its group (group.id or metadata.group_id), equal to group_id.";
            }

            if (SnapshotRules.Check(run, "run.") is { } invalid)
            {
                return invalid;
            }
        }

        return null;
    }

    /// <summary>The cause logged for a run's owner out of reach: a fault, logged with its exception.</summary>
    internal const string OwnerOutOfReach = "its owner could not be reached";

    /// <summary>
    /// The 503 of every endpoint whose run's owner could not be reached: the answer says only "try again" (no exception
    /// text), so why is logged here, in one place for all of them.
    /// </summary>
    internal static ProblemHttpResult OwnerUnavailable(ILogger logger, long runId, RunOwnerUnavailableException exception)
    {
        if (exception.KnownCause is { } cause)
        {
            // A state the runbook describes, not a fault: why, on one line, without a stack trace.
            LogOwnerUnavailable(logger, runId, cause, null);
        }
        else
        {
            LogOwnerUnavailable(logger, runId, OwnerOutOfReach, exception);
        }

        return Problems.Unavailable(exception);
    }

    [LoggerMessage(EventId = 5001, EventName = "RunOwnerUnavailable", Level = LogLevel.Warning, Message = "Run {RunId}: {Reason}")]
    private static partial void LogOwnerUnavailable(ILogger logger, long runId, string reason, Exception? exception);

    private const string TriggersOverLimit = "manual triggers over the limit";

    /// <summary>A caller retrying in a loop, or a limit set too low for a team's use: the line names the first group of the minute.</summary>
    [LoggerMessage(EventId = 5003, EventName = "TriggerRateLimited", Level = LogLevel.Warning,
        Message = "Run {RunId}: manual trigger refused (429), group {GroupId} past its {PermitsPerMinute} triggers a minute (Handoff:RateLimits:TriggersPerGroupPerMinute); {Unlogged} more triggers refused so, of any group, since the last such line were not logged (one line a minute)")]
    private static partial void LogTriggerRateLimited(ILogger logger, long runId, long groupId, int permitsPerMinute, long unlogged);

    [LoggerMessage(EventId = 5002, EventName = "RecentRunsUnavailable", Level = LogLevel.Warning, Message = "The recent runs could not be read")]
    private static partial void LogRecentRunsUnavailable(ILogger logger, Exception exception);
}

/// <summary>What every handoff endpoint needs.</summary>
public sealed record HandoffServices(IRunOwner Owner, IOptions<HandoffOptions> Options, ILogger<HandoffServices> Logger);

/// <summary>Limits on a run snapshot from outside, checked before it is stored.</summary>
public static class SnapshotRules
{
    /// <summary>
    /// A sanity ceiling on the list as sent, far above <c>Launch:MaxRepositories</c>: between the two the engine
    /// launches up to the cap and reports each repository past it as <c>too_many_repositories</c>, so a completion
    /// event with a long list is handed off in part and never dropped whole.
    /// </summary>
    public const int MaxRepositoryEntries = 1000;

    /// <param name="at">
    /// Where the snapshot is in the body, before each field's name: <c>run.</c> for a trigger's (whose body has a
    /// <c>group_id</c> of its own), nothing for an event's.
    /// </param>
    public static string? Check(RunSnapshot snapshot, string at = "")
    {
        if (!WholeIds.IsValid(snapshot.RunId))
        {
            return $"{at}run_id must be a positive whole number (at most {WholeIds.Max}).";
        }

        // Every id the run carries is kept in its state: one past the limit would come back changed.
        var outOfRange = OutOfRange(snapshot.OrganizationId, at, "organization_id")
            ?? OutOfRange(snapshot.ProjectId, at, "project_id")
            ?? OutOfRange(snapshot.Group?.Id, at, "group.id")
            ?? OutOfRange(snapshot.Metadata?.GroupId, at, "metadata.group_id")
            ?? OutOfRange(snapshot.Preferences?.AutomationHandoff?.IntegrationId, at, "preferences.automation_handoff.integration_id");
        if (outOfRange is not null)
        {
            return outOfRange;
        }

        if (snapshot.Group?.Id is { } groupId && snapshot.Metadata?.GroupId is { } metadataGroupId && groupId != metadataGroupId)
        {
            // Which group owns the run, and whose triggers it takes, would be a guess.
            return $"{at}group.id and {at}metadata.group_id name different groups.";
        }

        if (snapshot.Preferences?.Repositories?.Count > MaxRepositoryEntries)
        {
            return $"{at}preferences.repositories may list at most {MaxRepositoryEntries} entries.";
        }

        return null;
    }

    private static string? OutOfRange(long? id, string at, string name) =>
        id is null || WholeIds.IsValid(id)
            ? null
            : $"{at}{name} must be a positive whole number (at most {WholeIds.Max}).";
}
