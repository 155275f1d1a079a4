using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.RegularExpressions;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Providers;

/// <summary>
/// Turns a provider's answer into a <see cref="ProviderFailure"/>: status code first (bodies are not
/// consistent across providers or even endpoints), the body only to tell a repository-access 400 and an account-limit
/// 403 (<c>quota_exceeded</c>) apart.
/// </summary>
public static partial class ProviderFailureClassifier
{
    private const int BodySniffLength = 4096;

    // Cloudflare's codes for an origin that had the request (there is no HttpStatusCode member for them).
    private const int OriginAnsweredUnexpectedly = 520;
    private const int OriginTimedOut = 524;

    /// <summary>The longest wait a provider can ask for: past it a launch would sit parked for no good reason.</summary>
    public static readonly TimeSpan MaxRetryAfter = TimeSpan.FromDays(1);

    public static ProviderFailure FromResponse(ProviderResponse response, DateTimeOffset now)
    {
        var status = response.StatusCode;
        var retryAfter = ParseRetryAfter(response.RetryAfter, now);
        return status switch
        {
            // No HTTP class (a garbled answer from whatever is in front of the provider): not a refusal, and nothing says
            // whether the provider acted, so it is read as an unreadable answer and the next attempt looks first.
            < 200 or > 599 => MalformedAnswer(status),
            // 303 to a POST: carried out, its result elsewhere (RFC 9110 §15.4.4). Redirects are not followed (the prompt
            // would go with them), so the answer is unread, not a refusal: the agent may exist.
            (int)HttpStatusCode.SeeOther => MalformedAnswer(status),
            (int)HttpStatusCode.Unauthorized => Final(FailureTypes.InvalidCredentials, status),
            // Cursor's 403 means "insufficient permissions, plan limits exceeded, or storage full" (its v0 API spec): the
            // message tells an account limit apart; otherwise a valid key that may not touch the repository.
            (int)HttpStatusCode.Forbidden when AccountLimit().IsMatch(Sniff(response.Body)) => Final(FailureTypes.QuotaExceeded, status),
            (int)HttpStatusCode.Forbidden => Final(FailureTypes.RepositoryAccess, status),
            (int)HttpStatusCode.BadRequest when MentionsRepositoryAccess(response.Body) => Final(FailureTypes.RepositoryAccess, status),
            (int)HttpStatusCode.RequestTimeout => new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, retryAfter, status),
            (int)HttpStatusCode.TooManyRequests => new ProviderFailure(FailureTypes.RateLimited, Retryable: true, RetryAfter: retryAfter, StatusCode: status),
            // 503 and the rest turned the request away; after these the origin may have created the agent before the
            // answer was lost (500 mid-request, 502/504 from a gateway in front, and Cloudflare's 520 "the origin
            // answered something unexpected" and 524 "the origin took the request and did not answer in time"), so the
            // next attempt reconciles first.
            (int)HttpStatusCode.InternalServerError or (int)HttpStatusCode.BadGateway or (int)HttpStatusCode.GatewayTimeout
                or OriginAnsweredUnexpectedly or OriginTimedOut =>
                new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, retryAfter, status),
            >= 500 and <= 599 => new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, RetryAfter: retryAfter, StatusCode: status),
            _ => Final(FailureTypes.InvalidRequest, status),
        };
    }

    public static ProviderFailure FromTransport(ProviderTransportException exception) =>
        new(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: exception.RequestSent, RequestSent: exception.RequestSent,
            Attempted: exception.Kind != TransportFailureKind.CircuitOpen);

    /// <summary>
    /// A call stopped while at the provider (its time was up, or its caller gave up): the request may be out, so whether
    /// the provider carried it out is unknown (a launch's next attempt looks first; a command is not sent again).
    /// </summary>
    public static readonly ProviderFailure Unanswered =
        new(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);

    /// <summary>
    /// An answer the engine cannot use, with no status to name: a provider client's fault, or an agent of another launch
    /// or repository. The request was out, so whether the provider carried it out is unknown.
    /// </summary>
    public static readonly ProviderFailure UnusableAnswer =
        new(FailureTypes.InvalidResponse, Retryable: true, OutcomeUnknown: true);

    /// <summary>
    /// An answer we cannot read (a 2xx with an unreadable body, a 303, a status with no HTTP class): the provider may well
    /// have created the agent.
    /// </summary>
    public static ProviderFailure MalformedAnswer(int statusCode) => UnusableAnswer with { StatusCode = statusCode };

    /// <summary>Parses <c>Retry-After</c> as delta-seconds or an HTTP date in any of its three forms (RFC 9110 §10.2.3, §5.6.7), at most <see cref="MaxRetryAfter"/>.</summary>
    public static TimeSpan? ParseRetryAfter(string? value, DateTimeOffset now)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }

        value = value.Trim();
        if (long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
        {
            return TimeSpan.FromSeconds(Math.Min(seconds, (long)MaxRetryAfter.TotalSeconds));
        }

        if (value.All(char.IsAsciiDigit))
        {
            // Seconds past a long: as long a wait as a provider can ask for.
            return MaxRetryAfter;
        }

        // HttpClient's date parser: IMF-fixdate and the obsolete RFC 850 and asctime forms, all of which a recipient must
        // accept (RFC 9110 §5.6.7). Embedded mode gets them rewritten as IMF-fixdate; daprd passes them on as written.
        if (RetryConditionHeaderValue.TryParse(value, out var condition) && condition.Date is { } date)
        {
            var delay = date - now;
            return delay <= TimeSpan.Zero ? TimeSpan.Zero : delay > MaxRetryAfter ? MaxRetryAfter : delay;
        }

        return null;
    }

    private static ProviderFailure Final(string failureType, int status) => new(failureType, Retryable: false, StatusCode: status);

    // Cursor's words for an account limit: "plan limits exceeded, or storage full", and quota/usage wording. Whole words
    // only: a message naming a repository such as acme/storage-service or acme/quota-tracker is about that repository.
    [GeneratedRegex(@"(?<![\w/.-])(plan limits?|storage|quotas?|usage limits?)(?![\w/-])", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex AccountLimit();

    // Only the provider's own words for "cannot reach the repository": a 400 about a malformed
    // repository field is our request's fault (invalid_request), not a missing app installation.
    private static readonly string[] RepositoryAccessPhrases = ["verify existence of branch"];

    private static bool MentionsRepositoryAccess(ReadOnlyMemory<byte> body) => Mentions(body, RepositoryAccessPhrases);

    /// <summary>The body's first <see cref="BodySniffLength"/> bytes, as text.</summary>
    private static string Sniff(ReadOnlyMemory<byte> body) => Encoding.UTF8.GetString(body.Span[..Math.Min(body.Length, BodySniffLength)]);

    /// <summary>Whether the body's first <see cref="BodySniffLength"/> bytes name any of the phrases, in any case.</summary>
    private static bool Mentions(ReadOnlyMemory<byte> body, string[] phrases)
    {
        var text = Sniff(body);
        foreach (var phrase in phrases)
        {
            if (text.Contains(phrase, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}
