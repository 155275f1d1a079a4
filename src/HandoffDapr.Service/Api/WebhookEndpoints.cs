using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Cursor;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using Microsoft.AspNetCore.Http.HttpResults;

namespace HandoffDapr.Service.Api;

/// <summary>
/// <c>POST /webhooks/cursor/{integrationId}</c>: Cursor's status reports. Authenticated by the HMAC of the raw
/// body alone, checked before anything in the body is read.
/// </summary>
public static partial class WebhookEndpoints
{
    public const string SignatureHeader = "X-Webhook-Signature";

    /// <summary>Cursor's route, before the integration's id: the launch gives Cursor this URL (<see cref="ProviderKinds"/>).</summary>
    public const string CursorPath = "/webhooks/cursor";
    public const string OperationId = "CursorWebhook";
    private const int MaxWebhookBytes = 256 * 1024;

    /// <summary>What a refused webhook is told would be accepted: an HMAC-SHA256 of the body in <see cref="SignatureHeader"/>.</summary>
    private const string Challenge = $"HMAC-SHA256 header=\"{SignatureHeader}\"";

    public static IEndpointRouteBuilder MapWebhookEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapPost($"{CursorPath}/{{integrationId}}", ReceiveCursorAsync).WithTags("Webhooks").WithName(OperationId)
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status408RequestTimeout)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        return app;
    }

    private static ProblemHttpResult Unauthorized(HttpRequest request)
    {
        request.HttpContext.Response.Headers.WWWAuthenticate = Challenge;
        return Problems.Unauthorized();
    }

    public static async Task<Results<NoContent, ProblemHttpResult, RetryAfterResult>> ReceiveCursorAsync(
        string integrationId, [Microsoft.AspNetCore.Mvc.FromQuery] string[]? run_id, HttpRequest request, [AsParameters] HandoffServices services, Security.WebhookRateLimiter limiter, Security.RefusalLog rejections, CancellationToken cancellationToken)
    {
        var settings = services.Options.Value;
        // Cursor's route, read with Cursor's statuses: another provider's integration (GitHub sends no webhooks) is not
        // opened by a WebhookSecret set on it, or a Cursor-shaped report could move its agents. The caller is told none
        // of these apart from a bad signature; the log line tells the operator which.
        if (!RunIds.TryParse(integrationId, out var signingIntegration)
            || !settings.Integrations.TryGetValue(integrationId, out var integration)
            || integration.Provider != CursorAgentsProvider.Name
            || string.IsNullOrEmpty(integration.WebhookSecret))
        {
            var reason = WhyUnusable(settings, integrationId);
            LogRejected(services.Logger, rejections, reason == NotConfigured ? null : signingIntegration, IntegrationOnLine(integrationId), reason);
            return Unauthorized(request);
        }

        // Cursor's reports are small: a tighter cap than the API's, but never above Kestrel's own limit.
        var (received, problem) = await RequestBody.ReadAsync(request, Math.Min(MaxWebhookBytes, settings.MaxRequestBodyBytes), cancellationToken);
        if (received is null)
        {
            // Not yet known to be Cursor's, but should Cursor's reports change shape (grow, come compressed) this line is
            // all that shows it: the integration's agents would be followed by polling alone.
            LogRejected(services.Logger, rejections, signingIntegration, integrationId, WhyBodyRefused(problem!.StatusCode));
            return problem!;
        }

        using var body = received;
        var secret = integration.WebhookSecret;
        if (Authenticate(request, body, secret, signingIntegration, integrationId, limiter, rejections, services.Logger)
            is { } refused)
        {
            return refused;
        }

        var parsed = CursorWebhook.TryParse(body.Memory, out var change);
        if (parsed == CursorWebhook.ParseResult.Invalid)
        {
            // Signed, so the secret's holder sent it, and Cursor delivers again on the 400: without a line, a change of
            // its format would show only as agents that no webhook moves.
            LogMalformed(services.Logger, signingIntegration);
            return Problems.InvalidBody("The webhook body is not a Cursor event.");
        }

        if (parsed == CursorWebhook.ParseResult.OtherEvent)
        {
            return TypedResults.NoContent();
        }

        if (RunOf(run_id, change!, services.Logger) is not { } runId)
        {
            return TypedResults.NoContent();
        }

        AgentReportStatus outcome;
        try
        {
            // A webhook about an agent we launched means it was picked up: CREATING counts as running here.
            var report = change!.Agent.Status == ProviderAgentStatus.Creating
                ? change.Agent with { Status = ProviderAgentStatus.Running }
                : change.Agent;
            outcome = await services.Owner.ApplyAgentReportAsync(runId, new AgentReport(signingIntegration, report, change.Repository?.FullName), cancellationToken);
        }
        catch (RunOwnerUnavailableException exception)
        {
            // Cursor delivers again on a non-2xx answer.
            return HandoffEndpoints.OwnerUnavailable(services.Logger, runId, exception);
        }

        CountWebhook(change.Agent.Status, SnakeCaseNames<AgentReportStatus>.Of(outcome));
        if (outcome == AgentReportStatus.UnknownAgent)
        {
            LogUnknownAgent(services.Logger, runId, change.Agent.Id);
        }

        return TypedResults.NoContent();
    }

    /// <summary>
    /// The request authenticated to its body: null when it is signed and within the rate limit, else its refusal,
    /// logged. The limiter is asked before the signature's verdict is acted on.
    /// </summary>
    private static Results<NoContent, ProblemHttpResult, RetryAfterResult>? Authenticate(
        HttpRequest request, PooledBody body, string secret, long signingIntegration, string integrationId,
        Security.WebhookRateLimiter limiter, Security.RefusalLog rejections, ILogger logger)
    {
        var signed = WebhookSignature.IsValid(secret, body.Memory.Span, request.Headers[SignatureHeader].ToString());
        if (limiter.TryAcquire((signingIntegration, signed)) is { } wait)
        {
            if (rejections.ShouldLog(logger, signingIntegration, signed ? SignedOverLimit : UnsignedOverLimit)
                is { } unlogged)
            {
                LogRateLimited(
                    logger, signingIntegration, signed ? "signed" : "unsigned", limiter.PermitsPerMinute, unlogged);
            }

            return Problems.WebhooksRateLimited(wait);
        }

        if (!signed)
        {
            LogRejected(logger, rejections, signingIntegration, integrationId, BadSignature);
            return Unauthorized(request);
        }

        return null;
    }

    /// <summary>The run a parsed report goes to; null when it is ignored (logged and counted).</summary>
    private static long? RunOf(string[]? runIds, CursorStatusChange change, ILogger logger)
    {
        // A report that names a repository, GitHub's or not, goes to the run: one about its agent naming another than
        // the launch's is logged (AgentReportOfAnotherRepository) and counted (other_repository), whatever host it
        // names. The run is read first, so a report ignored for another reason is still logged with the run it was
        // about. Bound as an array: bound as one string, a repeated run_id arrives joined ("5,5") and was told apart
        // from a missing one by nothing. Either way the report is ignored (no usable run_id), but the line says which.
        var runNamed = RunIds.TryParse(runIds is [var only] ? only : null, out var runId);
        var noRunReason = runIds switch
        {
            null or [] => "no run id on the webhook URL",
            { Length: > 1 } => "run_id given more than once on the webhook URL",
            _ => "run_id on the webhook URL is not a valid run id",
        };
        if (string.IsNullOrWhiteSpace(change.RawRepository))
        {
            if (runNamed)
            {
                LogIgnored(logger, runId, change.Agent.Id, "no source repository");
            }
            else
            {
                LogIgnoredWithoutRun(logger, change.Agent.Id, $"no source repository, and {noRunReason}");
            }

            CountWebhook(change.Agent.Status, NoRepositoryOutcome);
            return null;
        }

        // A 204 for a run_id that is not valid too, not the API's 400: the URL is the one the launch gave Cursor, which
        // delivers again on any answer but 2xx, and the same URL again would be no better.
        if (!runNamed)
        {
            LogIgnoredWithoutRun(logger, change.Agent.Id, noRunReason);
            CountWebhook(change.Agent.Status, NoRunIdOutcome);
            return null;
        }

        return runId;
    }

    private const string NotConfigured = "no such integration is configured";
    private const string NotCursor = "the integration is not a Cursor one";
    private const string NoWebhookSecret = "the integration has no webhook secret";
    private const string BadSignature = "missing or bad signature";

    // Keys of the refusal log's windows for webhooks over the rate limit, apart from the 401s' reasons.
    private const string SignedOverLimit = "signed webhooks over the limit";
    private const string UnsignedOverLimit = "unsigned webhooks over the limit";

    private static string WhyBodyRefused(int? statusCode) => statusCode switch
    {
        StatusCodes.Status413PayloadTooLarge => "body over the webhook limit (413)",
        StatusCodes.Status408RequestTimeout => "body sent too slowly (408)",
        StatusCodes.Status415UnsupportedMediaType => "compressed body (415)",
        _ => "empty or broken body (400)",
    };

    private static string WhyUnusable(HandoffOptions settings, string integrationId) =>
        !RunIds.TryParse(integrationId, out _) || !settings.Integrations.TryGetValue(integrationId, out var integration) ? NotConfigured
            : integration.Provider != CursorAgentsProvider.Name ? NotCursor
            : NoWebhookSecret;

    /// <summary>
    /// The route's integration id as the caller wrote it, for a line about one that is not configured: bounded and without
    /// control characters (it is anyone's text), not dropped, since a typo in the URL given to Cursor shows there.
    /// </summary>
    private static string IntegrationOnLine(string integrationId) => PrintableText.Bounded(integrationId, MaxLoggedIntegrationId);

    private const int MaxLoggedIntegrationId = 32;

    /// <summary>
    /// Counted too, not only logged: if Cursor moved <c>source.repository</c> or the webhook URL lost its run id, every
    /// report would be ignored, and the counter is what an alert watches.
    /// </summary>
    private const string NoRepositoryOutcome = "no_repository";

    private const string NoRunIdOutcome = "no_run_id";

    /// <summary>Tag values as text in the API's snake_case (an enum would be exported as its C# name).</summary>
    private static void CountWebhook(ProviderAgentStatus status, string outcome) =>
        HandoffTelemetry.WebhookEvents.Add(
            1,
            new KeyValuePair<string, object?>("handoff.provider_status", SnakeCaseNames<ProviderAgentStatus>.Of(status)),
            new KeyValuePair<string, object?>("handoff.outcome", outcome));

    /// <summary>At most one line a minute per integration and reason (<see cref="Security.RefusalLog"/>).</summary>
    private static void LogRejected(ILogger logger, Security.RefusalLog rejections, long? configuredIntegration, string integrationId, string reason)
    {
        if (rejections.ShouldLog(logger, configuredIntegration, reason) is { } unlogged)
        {
            LogRejected(logger, integrationId, reason, unlogged);
        }
    }

    /// <summary>
    /// With the integration of the URL, which is no secret, so an operator can tell which one is misconfigured or posted
    /// to by someone else. No run: the line is written before the URL's run_id is read, and it is not signed anyway.
    /// </summary>
    [LoggerMessage(EventId = 5201, EventName = "WebhookRejected", Level = LogLevel.Warning,
        Message = "Webhook for integration {IntegrationId} rejected: {Reason}; {Unlogged} more refused for this reason since the last such line were not logged (one line a minute)")]
    private static partial void LogRejected(ILogger logger, string integrationId, string reason, long unlogged);

    /// <summary>
    /// Signed ones over the limit are the provider's own reports, delivered again later (a limit set too low for a busy
    /// integration); unsigned ones, someone else posting to the URL. Once a minute per integration and kind.
    /// </summary>
    [LoggerMessage(EventId = 5206, EventName = "WebhookRateLimited", Level = LogLevel.Warning,
        Message = "Webhook for integration {IntegrationId} refused (429): past {PermitsPerMinute} {Signature} webhooks a minute (Handoff:RateLimits:WebhooksPerIntegrationPerMinute); {Unlogged} more refused so since the last such line were not logged (one line a minute)")]
    private static partial void LogRateLimited(ILogger logger, long integrationId, string signature, int permitsPerMinute, long unlogged);

    /// <summary>Never the body: it is the provider's, and a prompt's words may be in it.</summary>
    [LoggerMessage(EventId = 5205, EventName = "WebhookMalformed", Level = LogLevel.Warning,
        Message = "Signed webhook for integration {IntegrationId} answered 400: the body is not a Cursor event")]
    private static partial void LogMalformed(ILogger logger, long integrationId);

    [LoggerMessage(EventId = 5203, EventName = "WebhookForUnknownAgent", Level = LogLevel.Information, Message = "Run {RunId}: webhook for agent {AgentId} ignored, the run has no such agent launched by this integration")]
    private static partial void LogUnknownAgent(ILogger logger, long runId, string agentId);

    /// <summary>With the run the webhook URL names: every line about a run carries its RunId (docs/runbook.md).</summary>
    [LoggerMessage(EventId = 5202, EventName = "WebhookIgnored", Level = LogLevel.Information, Message = "Webhook for agent {AgentId} of run {RunId} ignored: {Reason}")]
    private static partial void LogIgnored(ILogger logger, long runId, string agentId, string reason);

    /// <summary>
    /// A report on a URL naming no usable run: a line of its own, without a RunId, rather than the line above with a null
    /// one ("of run (null)").
    /// </summary>
    [LoggerMessage(EventId = 5204, EventName = "WebhookWithoutRunIgnored", Level = LogLevel.Information, Message = "Webhook for agent {AgentId} ignored: {Reason}")]
    private static partial void LogIgnoredWithoutRun(ILogger logger, string agentId, string reason);
}
