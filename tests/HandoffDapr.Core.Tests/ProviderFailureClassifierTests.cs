using System.Text;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Tests;

public sealed class ProviderFailureClassifierTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(401, "{}", FailureTypes.InvalidCredentials, false)]
    [InlineData(403, "{}", FailureTypes.RepositoryAccess, false)]
    [InlineData(403, """{"error":{"message":"Plan limits exceeded for background agents"}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":"Storage full"}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":"Storage is full"}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":{"message":"Background agent quota reached for this team"}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":{"message":"You have used your monthly quota."}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":{"message":"Team quotas exceeded"}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":{"message":"Usage limit reached for background agents"}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(403, """{"error":{"message":"Team usage limits exceeded"}}""", FailureTypes.QuotaExceeded, false)]
    [InlineData(400, """{"error":{"message":"Failed to verify existence of branch 'main' in repository"}}""", FailureTypes.RepositoryAccess, false)]
    [InlineData(400, """{"error":"bad prompt"}""", FailureTypes.InvalidRequest, false)]
    [InlineData(400, """{"error":{"message":"source.repository must be a GitHub URL"}}""", FailureTypes.InvalidRequest, false)]
    [InlineData(404, "{}", FailureTypes.InvalidRequest, false)]
    [InlineData(422, "{}", FailureTypes.InvalidRequest, false)]
    [InlineData(408, "{}", FailureTypes.ProviderUnavailable, true)]
    [InlineData(429, "{}", FailureTypes.RateLimited, true)]
    [InlineData(500, "{}", FailureTypes.ProviderUnavailable, true)]
    [InlineData(502, "<html>", FailureTypes.ProviderUnavailable, true)]
    [InlineData(503, "", FailureTypes.ProviderUnavailable, true)]
    [InlineData(504, "", FailureTypes.ProviderUnavailable, true)]
    [InlineData(520, "<html>", FailureTypes.ProviderUnavailable, true)]
    [InlineData(521, "<html>", FailureTypes.ProviderUnavailable, true)]
    [InlineData(522, "<html>", FailureTypes.ProviderUnavailable, true)]
    [InlineData(524, "<html>", FailureTypes.ProviderUnavailable, true)]
    [InlineData(599, "", FailureTypes.ProviderUnavailable, true)]
    [InlineData(400, """{"error":{"message":"FAILED TO VERIFY EXISTENCE OF BRANCH 'main'"}}""", FailureTypes.RepositoryAccess, false)]
    public void Status_code_decides_the_failure_type(int status, string body, string expected, bool retryable)
    {
        var failure = Classify(status, body);

        Assert.Equal(expected, failure.FailureType);
        Assert.Equal(retryable, failure.Retryable);
        // The request may have been acted on: a timeout, a server error mid-request, or a gateway that lost the origin's
        // answer (Cloudflare's 520 and 524; its 521 and 522 never reached the origin). 503 means it was turned away.
        // 4xx means it was refused.
        Assert.Equal(status is 408 or 500 or 502 or 504 or 520 or 524, failure.OutcomeUnknown);
    }

    [Theory]
    [InlineData("120", 120)]
    [InlineData("Tue, 24 Nov 2026 10:01:30 GMT", 90)]
    [InlineData("Tue, 24 Nov 2026 09:00:00 GMT", 0)]
    [InlineData(" 120 ", 120)]
    public void Retry_after_is_read_as_seconds_or_as_a_date(string header, int seconds)
    {
        var failure = ProviderFailureClassifier.FromResponse(new ProviderResponse(429, default, header), Now);

        Assert.Equal(TimeSpan.FromSeconds(seconds), failure.RetryAfter);
    }

    /// <summary>
    /// RFC 9110 §5.6.7: a recipient must accept the obsolete RFC 850 and asctime forms too. HttpClient's typed headers
    /// rewrite them as IMF-fixdate in embedded mode, but daprd hands the binding's headers on as the provider wrote them.
    /// </summary>
    [Theory]
    [InlineData("Tuesday, 24-Nov-26 10:01:30 GMT", 90)]
    [InlineData("Tue Nov 24 10:01:30 2026", 90)]
    public void Retry_after_as_an_obsolete_http_date_is_read_as_the_date(string header, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), ProviderFailureClassifier.ParseRetryAfter(header, Now));

    [Theory]
    [InlineData("999999999")]
    [InlineData("Fri, 27 Nov 2026 10:00:00 GMT")]
    [InlineData("Fri, 31 Dec 9999 23:59:59 GMT")]
    public void Retry_after_further_than_a_day_is_cut_to_a_day_in_either_form(string header) =>
        Assert.Equal(TimeSpan.FromDays(1), ProviderFailureClassifier.ParseRetryAfter(header, Now));

    /// <summary>
    /// A provider that turns a launch away for a while (a 503 in maintenance, a gateway's 502 or 504, a 408) may say how
    /// long, as a rate limit does: retried at the back-off's 30 seconds instead, the launch spends its attempts early.
    /// </summary>
    [Theory]
    [InlineData(408)]
    [InlineData(429)]
    [InlineData(500)]
    [InlineData(502)]
    [InlineData(503)]
    [InlineData(504)]
    [InlineData(520)]
    [InlineData(521)]
    public void Retry_after_is_carried_by_every_retryable_status(int status)
    {
        var failure = ProviderFailureClassifier.FromResponse(new ProviderResponse(status, default, "600"), Now);

        Assert.True(failure.Retryable);
        Assert.Equal(TimeSpan.FromMinutes(10), failure.RetryAfter);
    }

    [Theory]
    [InlineData("soon")]
    [InlineData("-5")]
    [InlineData("")]
    public void Unreadable_retry_after_is_ignored(string header) =>
        Assert.Null(ProviderFailureClassifier.ParseRetryAfter(header, Now));

    [Theory]
    [InlineData(403, "Team quota", FailureTypes.QuotaExceeded, FailureTypes.RepositoryAccess)]
    [InlineData(400, "Failed to verify existence of branch", FailureTypes.RepositoryAccess, FailureTypes.InvalidRequest)]
    public void Words_past_the_first_4_KiB_of_a_body_are_not_read(int status, string words, string whenRead, string whenPast)
    {
        // Only the start of a body is read for words: a garbage answer of any size costs the same small work. The words
        // end the body, so one byte more leaves their last letter past the limit.
        var endingAtTheLimit = new string(' ', 4096 - words.Length) + words;

        Assert.Equal(whenRead, Classify(status, endingAtTheLimit).FailureType);
        Assert.Equal(whenPast, Classify(status, " " + endingAtTheLimit).FailureType);
    }

    private static ProviderFailure Classify(int status, string body) =>
        ProviderFailureClassifier.FromResponse(new ProviderResponse(status, Encoding.UTF8.GetBytes(body)), Now);

    [Theory]
    [InlineData("""{"error":{"message":"Insufficient permissions for repository acme/storage-service"}}""")]
    [InlineData("""{"error":{"message":"The GitHub app is not installed on acme/quota-tracker"}}""")]
    [InlineData("""{"error":{"message":"Insufficient permissions for repository acme/storage"}}""")]
    [InlineData("""{"error":{"message":"Insufficient permissions for repository storage/shop"}}""")] // the owner's
    [InlineData("""{"error":{"message":"The GitHub app is not installed on 'storage-service'"}}""")]
    public void A_403_that_names_a_repository_with_an_account_limit_word_is_repository_access(string body)
    {
        // README: Cursor 403 is repository_access unless it is *about* plan limits, storage or quota.
        var failure = Classify(403, body);

        Assert.Equal(FailureTypes.RepositoryAccess, failure.FailureType);
    }

    [Theory]
    [InlineData("99999999999999999999")]
    [InlineData("18446744073709551616")]
    public void Retry_after_in_seconds_past_a_long_is_cut_to_a_day_not_ignored(string header) =>
        Assert.Equal(TimeSpan.FromDays(1), ProviderFailureClassifier.ParseRetryAfter(header, Now));

    [Theory]
    [InlineData(0)]
    [InlineData(199)]
    [InlineData(600)]
    [InlineData(999)]
    public void Status_code_outside_the_http_classes_is_an_unreadable_answer_whose_outcome_is_unknown(int status)
    {
        var failure = ProviderFailureClassifier.FromResponse(new ProviderResponse(status, "{}"u8.ToArray()), Now);

        // Not a refusal: nothing says whether the provider acted, so the next attempt looks for the agent first.
        Assert.Equal(FailureTypes.InvalidResponse, failure.FailureType);
        Assert.True(failure.Retryable);
        Assert.True(failure.OutcomeUnknown);
    }

    [Fact]
    public void See_other_says_the_request_was_carried_out_so_its_outcome_is_unknown_not_refused()
    {
        var failure = ProviderFailureClassifier.FromResponse(new ProviderResponse(303, default), Now);

        Assert.Equal(FailureTypes.InvalidResponse, failure.FailureType);
        Assert.True(failure.Retryable);
        Assert.True(failure.OutcomeUnknown);
    }

    [Fact]
    public void No_answer_after_sending_is_an_unknown_outcome_and_an_open_circuit_is_not()
    {
        var timeout = ProviderFailureClassifier.FromTransport(new ProviderTransportException(TransportFailureKind.Timeout, requestSent: true));
        var open = ProviderFailureClassifier.FromTransport(new ProviderTransportException(TransportFailureKind.CircuitOpen, requestSent: false));

        Assert.True(timeout.OutcomeUnknown);
        Assert.True(timeout.RequestSent);
        Assert.False(open.OutcomeUnknown);
        Assert.False(open.RequestSent);
        Assert.True(open.Retryable);
    }
}
