using System.Diagnostics;
using System.Text;
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
/// mode errors are problem details. In Dapr mode <c>POST /events/autofix-run-completed/dead-letter</c> also takes the
/// dead-letter topic's events, to log them (<see cref="DeadLetterAsync"/>).
/// </summary>
public static partial class CompletionEventEndpoints
{
    public const string Route = "/events/autofix-run-completed";
    public const string DeadLetterRoute = "/events/autofix-run-completed/dead-letter";

    public static IEndpointRouteBuilder MapCompletionEventEndpoints(this IEndpointRouteBuilder app, HostingMode mode, DaprOptions dapr)
    {
        var endpoint = app.MapPost(Route, AcceptAsync).WithTags("Events").WithName("AutofixRunCompleted")
            .AcceptsJson<Core.Model.RunSnapshot>()
            .Produces<DaprEventReply>()
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        // Refusals are problems in embedded mode only: daprd is answered RETRY or DROP (a 200), so there only the
        // drain's 503 is one.
        if (mode == HostingMode.Embedded)
        {
            endpoint.ProducesProblem(StatusCodes.Status400BadRequest)
                .ProducesProblem(StatusCodes.Status404NotFound)
                .ProducesProblem(StatusCodes.Status408RequestTimeout)
                .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
                .ProducesProblem(StatusCodes.Status415UnsupportedMediaType);
        }
        else
        {
            endpoint.WithTopic(new TopicOptions
            {
                PubsubName = dapr.PubSubName,
                Name = dapr.CompletionTopic,
                DeadLetterTopic = dapr.DeadLetterTopic,
            });
            // A dead letter may be an event dropped for being over Handoff:MaxRequestBodyBytes: read under the larger limit
            // daprd is set to pass (see DeadLetterBodyLimit), or it could not be told apart from any other.
            // Every dead letter is answered SUCCESS, whatever its body: no problem of its own, only the drain's 503.
            app.MapPost(DeadLetterRoute, DeadLetterAsync).WithTopic(dapr.PubSubName, dapr.DeadLetterTopic).WithTags("Events")
                .WithName("AutofixRunCompletedDeadLetter")
                .Produces<DaprEventReply>()
                .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
                .WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(
                    DeadLetterBodyLimit(app.ServiceProvider.GetRequiredService<IOptions<HandoffOptions>>().Value)));
        }

        return app;
    }

    public static async Task<IResult> AcceptAsync(HttpRequest request, [AsParameters] HandoffServices services, HostingContext hosting, CancellationToken cancellationToken)
    {
        var mode = hosting.Mode;
        var (body, problem) = await JsonBody.ReadBytesAsync(request, services.Options, cancellationToken);
        if (body is null)
        {
            // A body that came too slowly says nothing about the event: daprd is asked to deliver it again.
            return problem!.StatusCode == StatusCodes.Status408RequestTimeout && mode == HostingMode.Dapr
                ? DaprEventReply.Retry
                : Malformed(mode, services.Logger, problem);
        }

        var (snapshot, invalid, traceParent, digest, repeated) = ReadSnapshot(body, services);
        if (repeated)
        {
            return DaprEventReply.Success;
        }

        // A structured CloudEvent carries its trace context in the body: continue that trace.
        using var activity = traceParent is not null && ActivityContext.TryParse(traceParent, null, out var parent)
            ? HandoffTelemetry.ActivitySource.StartActivity("handoff.completion_event", ActivityKind.Consumer, parent)
            : null;
        activity?.SetTag("handoff.run_id", snapshot?.RunId);
        invalid ??= snapshot is null ? "The event data is not a run snapshot."
            : SnapshotRules.Check(snapshot)
                ?? (snapshot.GroupId is null ? "The run names no group (group.id or metadata.group_id, a positive whole number)." : null);
        if (invalid is not null || snapshot is null)
        {
            invalid ??= "The event data is not a run snapshot.";
            return Malformed(mode, services.Logger, Problems.InvalidBody(invalid));
        }

        CompletionOutcome outcome;
        try
        {
            outcome = await services.Owner.AcceptCompletedRunAsync(snapshot, digest, cancellationToken);
        }
        catch (RunOwnerUnavailableException exception)
        {
            // A known cause is said on one line; a fault's stack is logged.
            var knownCause = exception.KnownCause;
            LogEventRetry(
                services.Logger,
                snapshot.RunId,
                knownCause ?? HandoffEndpoints.OwnerOutOfReach,
                mode == HostingMode.Dapr ? "redelivery requested" : "answered 503",
                knownCause is null ? exception : null);

            return mode == HostingMode.Dapr ? DaprEventReply.Retry : Problems.Unavailable(exception);
        }

        return AnswerOutcome(mode, services.Logger, snapshot.RunId, outcome);
    }

    /// <summary>
    /// The body's snapshot, or why the event is refused, and the digest of its bytes; <c>Repeated</c> (logged) when
    /// they are those of an event already handled. The body is disposed here, once its bytes are read.
    /// </summary>
    private static (RunSnapshot? Snapshot, string? Invalid, string? TraceParent, byte[]? Digest, bool Repeated)
        ReadSnapshot(PooledBody body, HandoffServices services)
    {
        using (body)
        {
            var (data, decoded, invalid, traceParent) = FindSnapshot(body.Memory.Span);
            if (invalid is not null)
            {
                return (null, invalid, traceParent, null, false);
            }

            var snapshotBytes = decoded is not null ? decoded.AsSpan() : body.Memory.Span[data];
            // The exact bytes of an event already handled, where handling them again would change nothing (a
            // redelivery): answered without reading the run.
            if (services.Owner.FindRepeatedEvent(snapshotBytes, out var digest) is { } repeatedRun)
            {
                LogEventRepeated(services.Logger, repeatedRun);
                return (null, null, traceParent, digest, true);
            }

            var (snapshot, notASnapshot) = DeserializeSnapshot(snapshotBytes);
            return (snapshot, notASnapshot, traceParent, digest, false);
        }
    }

    /// <summary>The answer to an event the owner took or refused, by its outcome, logged.</summary>
    private static IResult AnswerOutcome(HostingMode mode, ILogger logger, long runId, CompletionOutcome outcome)
    {
        switch (outcome.Status)
        {
            case CompletionStatus.Rejected:
                LogEventDropped(logger, runId, Answer(mode, StatusCodes.Status404NotFound), outcome.Reason);
                return mode == HostingMode.Dapr ? DaprEventReply.Drop : Problems.UnknownRun();
            case CompletionStatus.RunDeleted:
                // As a duplicate is answered: taken, so pub/sub stops redelivering it; nothing is stored or launched.
                LogEventForDeletedRun(logger, runId);
                break;
            case CompletionStatus.HandedOff:
                var result = outcome.Result;
                LogEventHandedOff(logger, runId, result.Successes.Count, result.Failures.Count, result.Retries.Count);
                break;
            default:
                LogEventStored(logger, runId, outcome.Reason);
                break;
        }

        return DaprEventReply.Success;
    }

    /// <summary>
    /// Dropped events land here (malformed ones, and retried ones daprd gave up on); each is logged with what identifies
    /// it, the CloudEvent's id and the run, so an operator can find it and replay it once the cause is fixed.
    /// </summary>
    public static async Task<IResult> DeadLetterAsync(HttpRequest request, [AsParameters] HandoffServices services, CancellationToken cancellationToken)
    {
        var (body, _) = await JsonBody.ReadBytesAsync(request, services.Options, cancellationToken, DeadLetterBodyLimit(services.Options.Value));
        using (body)
        {
            var (eventId, runId) = body is null ? (null, null) : IdentifyDeadLetter(body.Memory);
            LogDeadLetter(services.Logger, eventId ?? "unknown", runId, body?.Length ?? request.ContentLength ?? -1);
        }

        return DaprEventReply.Success;
    }

    /// <summary>
    /// The largest dead letter read: as large as daprd's own body limit is to be set (the actor calls' limit, see
    /// <c>dapr.io/max-body-size</c>), so an event dropped for being over <see cref="HandoffOptions.MaxRequestBodyBytes"/>
    /// is still logged with its id and run. Go writes a CloudEvent's members sorted by name, <c>data</c> before <c>id</c>:
    /// the id is only found by reading the whole body.
    /// </summary>
    internal static long DeadLetterBodyLimit(HandoffOptions options) => Extensions.HandoffServiceExtensions.ActorCallBodyLimit(options);

    /// <summary>A dead letter's CloudEvent id (made printable and short: it is the sender's text) and its run, as far as they can be read.</summary>
    private static (string? EventId, long? RunId) IdentifyDeadLetter(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = HandoffJsonContext.Default.Options.MaxDepth });
            var root = document.RootElement;
            var data = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("data", out var inner) ? inner : root;
            var eventId = JsonElements.String(root, "id") is { } id ? PrintableText.Bounded(id, MaxLoggedEventId) : null;
            // The data of a binary payload comes as data_base64, which the completion event's endpoint reads too.
            return (eventId, JsonElements.String(root, "data_base64") is { } encoded ? RunOfEncodedData(encoded) : JsonElements.Int64(data, "run_id"));
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException)
        {
            return (null, null);
        }
    }

    private const int MaxLoggedEventId = 128;

    private static long? RunOfEncodedData(string encoded)
    {
        if (FromBase64(encoded) is not { } decoded)
        {
            return null;
        }

        // Data that is not JSON (a binary payload, the kind the event route drops) has no run; the event's id is still logged.
        try
        {
            using var document = JsonDocument.Parse(decoded, new JsonDocumentOptions { MaxDepth = HandoffJsonContext.Default.Options.MaxDepth });
            return JsonElements.Int64(document.RootElement, "run_id");
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>A CloudEvent's <c>data_base64</c> decoded; null when it is not base64.</summary>
    private static byte[]? FromBase64(string? encoded)
    {
        var decoded = new byte[((encoded?.Length ?? 0) * 3 / 4) + 3];
        return encoded is not null && Convert.TryFromBase64String(encoded, decoded, out var length) ? decoded[..length] : null;
    }

    /// <summary>
    /// Where the snapshot is: the data of a structured CloudEvent (as daprd delivers it, <c>application/cloudevents+json</c>),
    /// decoded when it came as <c>data_base64</c>, or the whole body. One pass over the bytes: the top level is scanned
    /// for the envelope's fields.
    /// </summary>
    private static (Range Data, byte[]? Decoded, string? Invalid, string? TraceParent) FindSnapshot(ReadOnlySpan<byte> body)
    {
        try
        {
            var invalid = ReadEnvelope(body, out var data, out var decoded, out var traceParent);
            return invalid is null ? (data, decoded, null, traceParent) : (default, null, invalid, null);
        }
        catch (JsonException exception)
        {
            return (default, null, JsonBody.Unreadable("The body", exception), null);
        }
        catch (InvalidOperationException)
        {
            // A property name that cannot be unescaped (a lone surrogate, \ud800): well-formed JSON all the same.
            return (default, null, "The body cannot be read: a property name is not valid text (it escapes a lone surrogate, such as \\ud800).", null);
        }
    }

    private static (RunSnapshot? Snapshot, string? Invalid) DeserializeSnapshot(ReadOnlySpan<byte> data)
    {
        try
        {
            var snapshot = JsonSerializer.Deserialize(data, InboundJson.RunSnapshot);
            return snapshot is null ? (null, NotAnObject) : (snapshot, null);
        }
        catch (JsonException exception)
        {
            return (null, JsonBody.Unreadable("The event data (a run snapshot)", exception));
        }
        catch (Exception exception) when (exception is InvalidOperationException or FormatException or OverflowException)
        {
            return (null, "The event data is not a run snapshot.");
        }
    }

    /// <summary>
    /// Where the body's snapshot is: a CloudEvent's <c>data</c>, or its <c>data_base64</c> decoded (CloudEvents' JSON
    /// format, §3.1: one or the other, never both), else the whole body. Null, or why the body is refused.
    /// </summary>
    private static string? ReadEnvelope(ReadOnlySpan<byte> body, out Range data, out byte[]? decoded, out string? traceParent)
    {
        data = Range.All;
        decoded = null;
        traceParent = null;
        // The same depth limit as the snapshot's own reader, for the envelope around it too.
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = HandoffJsonContext.Default.Options.MaxDepth });
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip(); // a malformed body throws here, as it would have at its end
            return NotAnObject;
        }

        var isCloudEvent = false;
        Range? eventData = null;
        string? eventTraceParent = null, encodedData = null;
        bool sawData = false, sawEncodedData = false;
        // The envelope's names met so far, in any letter case, as the snapshot's reader takes its own: one of them named
        // twice ("data" and "data", or "DATA") is refused like any duplicate, whichever copy another reader would take.
        var envelopeNamesSeen = EnvelopeName.None;
        Span<byte> nameBuffer = stackalloc byte[MaxEscapedEnvelopeName];
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var envelopeName = EnvelopeNameOf(ref reader, nameBuffer);
            if ((envelopeNamesSeen & envelopeName) != 0)
            {
                throw new JsonException("A property named twice.");
            }

            envelopeNamesSeen |= envelopeName;
            if (reader.ValueTextEquals("specversion"u8))
            {
                isCloudEvent = true;
            }
            else if (reader.ValueTextEquals("data"u8))
            {
                sawData = true;
                reader.Read();
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                eventData = start..(int)reader.BytesConsumed;
                continue;
            }
            else if (reader.ValueTextEquals("data_base64"u8))
            {
                sawEncodedData = true;
                reader.Read();
                encodedData = JsonElements.String(ref reader);
                reader.Skip();
                continue;
            }
            else if (reader.ValueTextEquals("traceparent"u8))
            {
                reader.Read();
                eventTraceParent = JsonElements.String(ref reader);
                reader.Skip();
                continue;
            }

            reader.Read();
            reader.Skip();
        }

        if (reader.Read())
        {
            throw new JsonException("Content after the top-level object.");
        }

        if (!isCloudEvent)
        {
            return null;
        }

        traceParent = eventTraceParent;
        if (!sawData && !sawEncodedData)
        {
            // Said as such: read as the snapshot, the envelope was refused for its run_id, which it never had.
            return NoData;
        }

        if (sawEncodedData)
        {
            if (sawData)
            {
                return "The event has both data and data_base64.";
            }

            decoded = FromBase64(encodedData);
            if (decoded is null)
            {
                return "The event's data_base64 is not base64.";
            }
        }
        else if (eventData is { } found)
        {
            data = found;
        }

        return null;
    }

    private const string NotAnObject = "The event data must be a JSON object.";

    private const string NoData = "The event carries no data: a CloudEvent's run snapshot is its data or data_base64.";

    [Flags]
    private enum EnvelopeName
    {
        None = 0,
        SpecVersion = 1,
        Data = 2,
        DataBase64 = 4,
        TraceParent = 8,
    }

    /// <summary>"data_base64" with every character escaped (<c>\u0064…</c>): no longer name can be one of the envelope's.</summary>
    private const int MaxEscapedEnvelopeName = 6 * 11;

    /// <summary>Which of the envelope's names the property at the reader is, in any (ASCII) letter case; no string allocated.</summary>
    private static EnvelopeName EnvelopeNameOf(ref Utf8JsonReader reader, scoped Span<byte> buffer)
    {
        if (reader.ValueSpan.Length > buffer.Length)
        {
            return EnvelopeName.None;
        }

        ReadOnlySpan<byte> name = reader.ValueIsEscaped ? buffer[..reader.CopyString(buffer)] : reader.ValueSpan;
        return Ascii.EqualsIgnoreCase(name, "specversion"u8) ? EnvelopeName.SpecVersion
            : Ascii.EqualsIgnoreCase(name, "data"u8) ? EnvelopeName.Data
            : Ascii.EqualsIgnoreCase(name, "data_base64"u8) ? EnvelopeName.DataBase64
            : Ascii.EqualsIgnoreCase(name, "traceparent"u8) ? EnvelopeName.TraceParent
            : EnvelopeName.None;
    }

    /// <summary>Logged as the problem's title and detail, whichever check refused the event.</summary>
    private static IResult Malformed(HostingMode mode, ILogger logger, ProblemHttpResult problem)
    {
        LogEventMalformed(logger, Answer(mode, problem.StatusCode), $"{problem.ProblemDetails.Title}: {problem.ProblemDetails.Detail}");
        // daprd: DROP sends the event to the dead-letter topic; redelivering it could never succeed.
        return mode == HostingMode.Dapr ? DaprEventReply.Drop : problem;
    }

    /// <summary>What the sender of a refused event was told, for the log: only Dapr mode drops events.</summary>
    private static string Answer(HostingMode mode, int status) =>
        mode == HostingMode.Dapr ? "dropped to the dead-letter topic" : $"answered {status}";

    [LoggerMessage(EventId = 5101, EventName = "CompletionEventMalformed", Level = LogLevel.Warning, Message = "Completion event refused, {Answer}: {Reason}")]
    private static partial void LogEventMalformed(ILogger logger, string answer, string reason);

    [LoggerMessage(EventId = 5102, EventName = "CompletionEventDropped", Level = LogLevel.Warning, Message = "Completion event for run {RunId} refused, {Answer}: {Reason}")]
    private static partial void LogEventDropped(ILogger logger, long runId, string answer, string reason);

    [LoggerMessage(EventId = 5103, EventName = "CompletionEventRetry", Level = LogLevel.Warning, Message = "Completion event for run {RunId} could not be processed now: {Cause}; {Answer}")]
    private static partial void LogEventRetry(ILogger logger, long runId, string cause, string answer, Exception? exception);

    /// <summary>
    /// <c>PendingLaunches</c> is every launch not yet done (the result's <see cref="Core.Model.HandoffResult.Retries"/>):
    /// saved as due, in flight, or to be retried after a failure; not only retries.
    /// </summary>
    [LoggerMessage(EventId = 5104, EventName = "CompletionEventHandedOff", Level = LogLevel.Information, Message = "Run {RunId} handed off automatically: {Successes} agent(s), {Failures} failure(s), {PendingLaunches} launch(es) under way or still to make (saved as due, in flight, or to be retried)")]
    private static partial void LogEventHandedOff(ILogger logger, long runId, int successes, int failures, int pendingLaunches);

    [LoggerMessage(EventId = 5105, EventName = "CompletionEventStored", Level = LogLevel.Information, Message = "Run {RunId} snapshot stored; no automatic handoff ({Reason})")]
    private static partial void LogEventStored(ILogger logger, long runId, string reason);

    [LoggerMessage(EventId = 5107, EventName = "CompletionEventRepeated", Level = LogLevel.Debug, Message = "Completion event for run {RunId} repeats one already handled; nothing to do")]
    private static partial void LogEventRepeated(ILogger logger, long runId);

    [LoggerMessage(EventId = 5108, EventName = "CompletionEventForDeletedRun", Level = LogLevel.Information,
        Message = "Completion event for run {RunId} ignored: the run was deleted by retention (Handoff:RunRetention); nothing is launched for it again")]
    private static partial void LogEventForDeletedRun(ILogger logger, long runId);

    [LoggerMessage(EventId = 5106, EventName = "DeadLetterReceived", Level = LogLevel.Error,
        Message = "A completion event reached the dead-letter topic: event {EventId}, run {RunId} ({Length} bytes); once its cause is fixed, replay it or trigger the run by hand")]
    private static partial void LogDeadLetter(ILogger logger, string eventId, long? runId, long length);
}
