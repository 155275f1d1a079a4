using System.Diagnostics;
using System.Text.Json;
using Dapr;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Api;

/// <summary>
/// <c>POST /events/autofix-run-completed</c>: the pub/sub subscription in Dapr mode, posted to directly in
/// embedded mode. In Dapr mode the reply follows daprd's contract (SUCCESS / RETRY / DROP); in embedded
/// mode errors are problem details.
/// </summary>
public static partial class CompletionEventEndpoints
{
    public const string Route = "/events/autofix-run-completed";
    public const string DeadLetterRoute = "/events/autofix-run-completed/dead-letter";

    public static IEndpointRouteBuilder MapCompletionEventEndpoints(this IEndpointRouteBuilder app, HostingMode mode, DaprOptions dapr)
    {
        var endpoint = app.MapPost(Route, AcceptAsync).WithTags("Events").WithName("AutofixRunCompleted")
            .Accepts<Core.Model.RunSnapshot>("application/json", "application/cloudevents+json")
            .Produces<DaprEventReply>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        if (mode == HostingMode.Dapr)
        {
            endpoint.WithTopic(new TopicOptions
            {
                PubsubName = dapr.PubSubName,
                Name = dapr.CompletionTopic,
                DeadLetterTopic = dapr.DeadLetterTopic,
            });
            app.MapPost(DeadLetterRoute, DeadLetter).WithTopic(dapr.PubSubName, dapr.DeadLetterTopic).WithTags("Events");
        }

        return app;
    }

    public static async Task<IResult> AcceptAsync(HttpRequest request, [AsParameters] HandoffServices services, HostingContext hosting, CancellationToken cancellationToken)
    {
        var mode = hosting.Mode;
        var (document, problem) = await JsonBody.ReadAsync(request, HandoffJsonContext.Default.JsonElement, services.Options, cancellationToken);
        if (problem is not null)
        {
            return Malformed(mode, services.Logger, "unreadable body", problem);
        }

        var (snapshot, invalid, traceParent) = ReadSnapshot(document);
        // A structured CloudEvent carries its trace context in the body: continue that trace.
        using var activity = traceParent is not null && ActivityContext.TryParse(traceParent, null, out var parent)
            ? HandoffTelemetry.ActivitySource.StartActivity("handoff.completion_event", ActivityKind.Consumer, parent)
            : null;
        activity?.SetTag("handoff.run_id", snapshot?.RunId);
        invalid ??= snapshot is null ? "The event data is not a run snapshot." : SnapshotRules.Check(snapshot, services.Options.Value);
        if (invalid is not null || snapshot is null)
        {
            invalid ??= "The event data is not a run snapshot.";
            return Malformed(mode, services.Logger, invalid, Problems.InvalidBody(invalid));
        }

        CompletionOutcome outcome;
        try
        {
            outcome = await services.Owner.AcceptCompletedRunAsync(snapshot, cancellationToken);
        }
        catch (RunOwnerUnavailableException exception)
        {
            LogEventRetry(services.Logger, snapshot.RunId, exception);
            return mode == HostingMode.Dapr ? TypedResults.Ok(new DaprEventReply("RETRY")) : Problems.Unavailable();
        }

        switch (outcome.Status)
        {
            case CompletionStatus.Rejected:
                LogEventDropped(services.Logger, snapshot.RunId, outcome.Reason);
                return mode == HostingMode.Dapr ? TypedResults.Ok(new DaprEventReply("DROP")) : Problems.UnknownRun();
            case CompletionStatus.HandedOff:
                LogEventHandedOff(services.Logger, snapshot.RunId, outcome.Result.Successes.Count, outcome.Result.Failures.Count, outcome.Result.Retries.Count);
                break;
            default:
                LogEventStored(services.Logger, snapshot.RunId, outcome.Reason);
                break;
        }

        return TypedResults.Ok(new DaprEventReply("SUCCESS"));
    }

    /// <summary>Dropped events land here; they are logged so an operator can see and replay them.</summary>
    public static IResult DeadLetter(HttpRequest request, ILogger<HandoffServices> logger)
    {
        LogDeadLetter(logger, request.ContentLength ?? -1);
        return TypedResults.Ok(new DaprEventReply("SUCCESS"));
    }

    /// <summary>The data of a CloudEvent (unwrapped by <c>UseCloudEvents</c>, or a structured event sent as plain JSON) or a bare snapshot.</summary>
    private static (RunSnapshot? Snapshot, string? Invalid, string? TraceParent) ReadSnapshot(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            return (null, "The event data must be a JSON object.", null);
        }

        var isCloudEvent = root.TryGetProperty("specversion", out _) && root.TryGetProperty("data", out _);
        var data = isCloudEvent ? root.GetProperty("data") : root;
        var traceParent = isCloudEvent ? JsonElements.String(root, "traceparent") : null;
        try
        {
            var snapshot = data.Deserialize(HandoffJsonContext.Default.RunSnapshot);
            return snapshot is null ? (null, "The event data must be a JSON object.", traceParent) : (snapshot, null, traceParent);
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException or FormatException or OverflowException)
        {
            return (null, "The event data is not a run snapshot.", traceParent);
        }
    }

    private static IResult Malformed(HostingMode mode, ILogger logger, string reason, ProblemHttpResult problem)
    {
        LogEventMalformed(logger, reason);
        // daprd: DROP sends the event to the dead-letter topic; redelivering it could never succeed.
        return mode == HostingMode.Dapr ? TypedResults.Ok(new DaprEventReply("DROP")) : problem;
    }

    [LoggerMessage(EventId = 5101, EventName = "CompletionEventMalformed", Level = LogLevel.Warning, Message = "Completion event dropped: {Reason}")]
    private static partial void LogEventMalformed(ILogger logger, string reason);

    [LoggerMessage(EventId = 5102, EventName = "CompletionEventDropped", Level = LogLevel.Warning, Message = "Completion event for run {RunId} dropped: {Reason}")]
    private static partial void LogEventDropped(ILogger logger, long runId, string reason);

    [LoggerMessage(EventId = 5103, EventName = "CompletionEventRetry", Level = LogLevel.Warning, Message = "Completion event for run {RunId} could not be processed now; redelivery requested")]
    private static partial void LogEventRetry(ILogger logger, long runId, Exception exception);

    [LoggerMessage(EventId = 5104, EventName = "CompletionEventHandedOff", Level = LogLevel.Information, Message = "Run {RunId} handed off automatically: {Successes} agent(s), {Failures} failure(s), {Retries} retry(ies) scheduled")]
    private static partial void LogEventHandedOff(ILogger logger, long runId, int successes, int failures, int retries);

    [LoggerMessage(EventId = 5105, EventName = "CompletionEventStored", Level = LogLevel.Information, Message = "Run {RunId} snapshot stored; no automatic handoff ({Reason})")]
    private static partial void LogEventStored(ILogger logger, long runId, string reason);

    [LoggerMessage(EventId = 5106, EventName = "DeadLetterReceived", Level = LogLevel.Error, Message = "A completion event reached the dead-letter topic ({Length} bytes)")]
    private static partial void LogDeadLetter(ILogger logger, long length);
}
