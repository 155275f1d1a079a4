using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.WebUtilities;

namespace HandoffDapr.Service.Api;

/// <summary>
/// Every error the API returns, as RFC 9457 problem details with a stable <c>type</c> and <c>title</c>.
/// Details are written here, from fixed text: never from an exception, a provider body or a header.
/// </summary>
public static class Problems
{
    private const string TypeBase = "https://handoff-dapr.dev/problems/";

    /// <summary>
    /// A missing run, or one of another group (answered alike). The detail depends only on the request: a read that
    /// named no group is not told about "the given group", and a trigger without <c>run</c> is told how a run not
    /// stored yet is named.
    /// </summary>
    public static ProblemHttpResult UnknownRun(UnknownRunContext context = UnknownRunContext.GroupNamed) =>
        Problem(StatusCodes.Status404NotFound, "unknown-run", "Unknown run", context switch
        {
            UnknownRunContext.NoGroupNamed => "No run has this id.",
            UnknownRunContext.Trigger => "No run with this id belongs to the given group. A run this service has not stored yet (no completion event) needs its snapshot in the body's run.",
            _ => "No run with this id belongs to the given group.",
        });

    /// <summary>
    /// A run deleted by <c>Handoff:RunRetention</c>: said so, rather than an unexplained 404, while its tombstone is kept
    /// (30 days after it went). The same for a read and a trigger: nothing is launched for it again.
    /// </summary>
    public static ProblemHttpResult RunDeleted(DateTimeOffset deletedAt) =>
        Problem(StatusCodes.Status404NotFound, "run-deleted", "Run deleted",
            $"This run was deleted at {deletedAt.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'} by retention (Handoff:RunRetention): it had been settled, with nothing pending, for that long. Nothing more is launched for it; start another autofix run to hand it off again.");

    /// <summary>A trigger's <c>integration_id</c> that names no integration configured here.</summary>
    public static ProblemHttpResult UnknownIntegration() =>
        Problem(StatusCodes.Status404NotFound, "unknown-integration", "Unknown integration", "integration_id names no integration configured on this service.");

    /// <summary>
    /// A stop or follow-up of an agent whose integration was taken out of the settings since: the request named no
    /// integration, so "the integration" alone would not say which one is missing.
    /// </summary>
    public static ProblemHttpResult AgentIntegrationRemoved() =>
        Problem(StatusCodes.Status404NotFound, "unknown-integration", "Unknown integration", "The integration that launched this agent is no longer configured on this service: nothing can reach the agent.");

    public static ProblemHttpResult InvalidBody(string detail) =>
        Problem(StatusCodes.Status400BadRequest, "invalid-body", "Invalid request body", detail);

    public static ProblemHttpResult InvalidRequest(string detail) =>
        Problem(StatusCodes.Status400BadRequest, "invalid-request", "Invalid request", detail);

    /// <summary>A run id in the path that is not a whole number from 1 to 2^53 − 1.</summary>
    public static ProblemHttpResult InvalidRunId() => InvalidRequest($"The run id must be a positive whole number (at most {Core.Model.WholeIds.Max}).");

    /// <summary>A query parameter named twice (<c>?group_id=1&amp;group_id=2</c>): which value is meant would be a guess.</summary>
    public static ProblemHttpResult RepeatedQueryParameter(string name) =>
        InvalidRequest($"{name} must be given once.");

    public static ProblemHttpResult BodyTooSlow() =>
        Problem(StatusCodes.Status408RequestTimeout, "body-too-slow", "Request body too slow", "The body did not arrive in time. Send it again.");

    public static ProblemHttpResult BodyTooLarge(long limit) =>
        Problem(StatusCodes.Status413PayloadTooLarge, "body-too-large", "Request body too large", $"The body may be at most {limit} bytes.");

    /// <summary>
    /// For <c>UseStatusCodePages</c>: a status set without a body becomes our problem as JSON, whatever the request's
    /// <c>Accept</c> says (the framework's own writer would fall back to plain text). Routing refuses some requests
    /// before any handler runs (no such path, a method the path does not take, a Content-Type no endpoint accepts);
    /// they get our type and text too, so a client sees one vocabulary of problems.
    /// </summary>
    public static Task WriteForBareStatus(StatusCodeContext context)
    {
        var status = context.HttpContext.Response.StatusCode;
        var problem = RoutingRefusal(status)
            ?? (status == StatusCodes.Status400BadRequest
                ? InvalidRequest("The request could not be read.")
                : Problem(status, "http-" + status, ReasonPhrases.GetReasonPhrase(status), "The request could not be served."));
        return problem.ExecuteAsync(context.HttpContext);
    }

    private static ProblemHttpResult? RoutingRefusal(int status) => status switch
    {
        StatusCodes.Status404NotFound => NoSuchEndpoint(),
        StatusCodes.Status405MethodNotAllowed => Problem(StatusCodes.Status405MethodNotAllowed, "method-not-allowed", "Method not allowed", "This path does not take this method."),
        StatusCodes.Status415UnsupportedMediaType => UnsupportedMediaType(),
        _ => null,
    };

    /// <summary>Routing's 404, and an actor call naming an actor type or method this app does not have.</summary>
    public static ProblemHttpResult NoSuchEndpoint() =>
        Problem(StatusCodes.Status404NotFound, "not-found", "Not found", "No endpoint has this path.");

    public static ProblemHttpResult UnsupportedMediaType() =>
        Problem(StatusCodes.Status415UnsupportedMediaType, "unsupported-media-type", "Unsupported media type", "Send JSON in UTF-8 (application/json, application/cloudevents+json or text/json).");

    public static ProblemHttpResult UnsupportedContentEncoding() =>
        Problem(StatusCodes.Status415UnsupportedMediaType, "unsupported-content-encoding", "Unsupported content encoding", "Send the body uncompressed (no Content-Encoding, or identity).");

    public static ProblemHttpResult UnknownAgent() =>
        Problem(StatusCodes.Status404NotFound, "unknown-agent", "Unknown agent", "No agent with this id belongs to the run.");

    /// <summary>Says nothing about why: not which of integration, header or signature was wrong.</summary>
    public static ProblemHttpResult Unauthorized() =>
        Problem(StatusCodes.Status401Unauthorized, "unauthorized", "Unauthorized", "The request could not be authenticated.");

    /// <summary>
    /// Loopback-only mode's refusal. Not only of a remote caller: a local one addressed by another name (DNS rebinding)
    /// or on behalf of another site is refused too, and "remote callers" would not tell it why.
    /// </summary>
    public static ProblemHttpResult Forbidden() =>
        Problem(StatusCodes.Status403Forbidden, "forbidden", "Forbidden", "This caller may not use the API: without Handoff:ApiToken only a loopback caller may, addressed to localhost or a loopback address and not on behalf of another site. Configure Handoff:ApiToken to accept others.");

    public static ProblemHttpResult ProviderFailed(string failureType)
    {
        var notSupported = failureType == Core.Model.FailureTypes.NotSupported;
        var problem = new ProblemDetails
        {
            Status = notSupported ? StatusCodes.Status409Conflict : StatusCodes.Status502BadGateway,
            Type = TypeBase + (notSupported ? "not-supported" : "provider-failed"),
            Title = notSupported ? "Not supported by this provider" : "Coding agent provider failed",
            Detail = notSupported ? "This integration's provider does not offer this action." : "The coding agent provider did not carry out the request.",
        };
        problem.Extensions["failure_type"] = failureType;
        return TypedResults.Problem(problem);
    }

    /// <summary>
    /// A stop or follow-up that was sent, or may have been, with no answer saying whether it was carried out (a time-out,
    /// a 500 mid-request, a gateway's 502 or 504, an answer that cannot be read, a provider client that threw): not
    /// "failed", since sending it again could reach the agent twice.
    /// </summary>
    public static ProblemHttpResult ProviderOutcomeUnknown(string failureType)
    {
        var problem = Details(
            StatusCodes.Status504GatewayTimeout,
            "outcome-unknown",
            "Coding agent provider outcome unknown",
            "The request may have reached the coding agent provider, and no answer said whether it was carried out. It may have been carried out: read the run before sending it again.");
        problem.Extensions["failure_type"] = failureType;
        return TypedResults.Problem(problem);
    }

    /// <summary>A trigger past its group's limit: named, with its setting, as other callers use it too.</summary>
    public static RetryAfterResult TriggersRateLimited(TimeSpan retryAfter, int perMinute) =>
        RateLimited(retryAfter, $"This group_id has had its {perMinute} triggers of this minute (Handoff:RateLimits:TriggersPerGroupPerMinute). Try again after the Retry-After delay.");

    /// <summary>
    /// A webhook past its integration's limit (signed and unsigned ones are counted apart). Unlike a trigger's, told
    /// neither the limit nor its setting: the route takes unauthenticated callers, and only the provider reads it.
    /// </summary>
    public static RetryAfterResult WebhooksRateLimited(TimeSpan retryAfter) =>
        RateLimited(retryAfter, "This integration's webhooks are over their limit for this minute. Try again after the Retry-After delay.");

    private static RetryAfterResult RateLimited(TimeSpan retryAfter, string detail) =>
        new RetryAfterResult(Problem(StatusCodes.Status429TooManyRequests, "rate-limited", "Too many requests", detail), retryAfter);

    /// <summary>
    /// The run's owner could not answer. A call cut off by shutdown says so, as a request after the drain is told: its
    /// state was reached (what the provider answered in the grace, or the launch as unknown, is recorded), so "could not be
    /// reached" would send the reader looking for a store or sidecar fault that is not there.
    /// </summary>
    public static ProblemHttpResult Unavailable(Hosting.RunOwnerUnavailableException? cause = null) =>
        Problem(StatusCodes.Status503ServiceUnavailable, UnavailableSlug, UnavailableTitle,
            cause switch
            {
                { ShuttingDown: true } => ShuttingDownDetail,
                // "Try again shortly" would have the caller retry for ever: nothing changes until an operator acts.
                { DamagedState: true } => "The run's stored state cannot be used (damaged or edited): the run is refused until an operator restores or deletes it; the service log says why.",
                _ => "The run's state could not be reached. Try again shortly.",
            });

    /// <summary>
    /// <c>GET /runs</c>'s store could not be read: about the list, not "the run's state" (the request names no run). The
    /// status page shows it after "Could not load runs (HTTP 503: ".
    /// </summary>
    public static ProblemHttpResult RecentRunsUnavailable() =>
        Problem(StatusCodes.Status503ServiceUnavailable, UnavailableSlug, UnavailableTitle, "The list of recent runs could not be read. Try again shortly.");

    /// <summary>
    /// The answer to a request that arrives once shutdown is over, as bytes: the services that write a problem may be
    /// gone by then (see <see cref="Hosting.RequestDrain.TryEnterRequest"/>).
    /// </summary>
    public static readonly byte[] ShuttingDownJson = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
        Details(StatusCodes.Status503ServiceUnavailable, UnavailableSlug, UnavailableTitle, ShuttingDownDetail),
        ServiceJsonContext.Default.ProblemDetails);

    private const string UnavailableSlug = "unavailable", UnavailableTitle = "Temporarily unavailable";

    private const string ShuttingDownDetail = "The service is shutting down. Try again shortly.";

    private static ProblemHttpResult Problem(int status, string slug, string title, string detail) => TypedResults.Problem(Details(status, slug, title, detail));

    private static ProblemDetails Details(int status, string slug, string title, string detail) =>
        new() { Status = status, Type = TypeBase + slug, Title = title, Detail = detail };
}

/// <summary>A problem with a <c>Retry-After</c> header.</summary>
public sealed class RetryAfterResult(ProblemHttpResult problem, TimeSpan retryAfter) : IResult
{
    public Task ExecuteAsync(HttpContext httpContext)
    {
        httpContext.Response.Headers.RetryAfter = Security.RetryAfterHeader.Format(retryAfter);
        return problem.ExecuteAsync(httpContext);
    }
}

/// <summary>What the request that met an unknown run named: the 404's detail speaks of that alone.</summary>
public enum UnknownRunContext
{
    GroupNamed,
    NoGroupNamed,
    Trigger,
}
