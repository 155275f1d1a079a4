using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Configuration;

namespace HandoffDapr.Service.Tests.Configuration;

/// <summary>Settings that used to start the service and fail later, or start it without a part of its configuration.</summary>
public sealed class HandoffOptionsValidatorTests
{
    private static readonly Dictionary<string, string?> Valid = new()
    {
        ["Handoff:DataPath"] = "handoff.db",
        ["Handoff:Integrations:42:Provider"] = "cursor_background_agent",
        ["Handoff:Integrations:42:ApiKey"] = "key_0123456789",
    };

    /// <summary>The valid settings of a mode: in Dapr mode the integration names its binding.</summary>
    private static Dictionary<string, string?> ValidIn(HostingMode mode) => mode == HostingMode.Dapr
        ? new Dictionary<string, string?>(Valid) { ["Handoff:Integrations:42:Binding"] = "coding-agent-cursor" }
        : Valid;

    [Theory]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:RequestTimeout", "1e3", "'Handoff:Integrations:42:RequestTimeout'")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:PollInterval", "30", "Handoff:Launch:PollInterval is '30', which would be read as days")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ShutdownDrain", "40", "Handoff:Dapr:ShutdownDrain is '40', which would be read as days")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:RequestTimeout", "1", "Handoff:Integrations:42:RequestTimeout is '1', which would be read as days")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:AutoCreatePr", "yes", "'Handoff:Integrations:42:AutoCreatePr'")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:RequestTimeout", "1.12:00:00", "Handoff:Integrations:42:RequestTimeout must be at least 10 ms, at most one day")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:ApiKey", "K\nX", "Handoff:Integrations:42:ApiKey must be printable ASCII")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:ApiKey", "key-é", "Handoff:Integrations:42:ApiKey must be printable ASCII")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:ApiKey", "key 0123456789", "Handoff:Integrations:42:ApiKey must be printable ASCII")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:BaseUrl", "http://127.0.0.1:5999/proxy?x=1", "Handoff:Integrations:42:BaseUrl must be an absolute http(s) URL without")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:BaseUrl", "http://proxy-user:proxy-pass@127.0.0.1:5999/", "Handoff:Integrations:42:BaseUrl must be an absolute http(s) URL without")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:WebhookSecret", "                                        ", "Handoff:Integrations:42:WebhookSecret must not be blank")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:RetryFactor", "NaN", "Handoff:Launch:RetryFactor must be a number of at least 1")]
    [InlineData(HostingMode.Embedded, "Handoff:DataPath", "   ", "Handoff:DataPath must name the SQLite file")]
    [InlineData(HostingMode.Embedded, "Handoff:DataPath", ":memory:", "Handoff:DataPath must be a file's path")]
    [InlineData(HostingMode.Embedded, "Handoff:DataPath", " :memory:", "Handoff:DataPath must be a file's path")]
    [InlineData(HostingMode.Embedded, "Handoff:DataPath", "file::memory:?cache=shared", "Handoff:DataPath must be a file's path")]
    [InlineData(HostingMode.Embedded, "Handoff:PublicBaseUrl", "https://h.example/#frag", "Handoff:PublicBaseUrl must be an absolute http(s) URL without")]
    [InlineData(HostingMode.Embedded, "Handoff:PublicBaseUrl", "https://h.example/?a=b", "Handoff:PublicBaseUrl must be an absolute http(s) URL without")]
    [InlineData(HostingMode.Embedded, "Handoff:PublicBaseUrl", "ftp://h.example/", "Handoff:PublicBaseUrl must be an absolute http(s) URL without")]
    [InlineData(HostingMode.Embedded, "Handoff:ApiToken", "tok123 ", "Handoff:ApiToken must not contain spaces")]
    [InlineData(HostingMode.Embedded, "Handoff:ApiToken", "tökén-0123456789", "Handoff:ApiToken must not contain spaces, control characters or non-ASCII")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ActorCallTimeout", "30.00:00:00", "Handoff:Dapr:ActorCallTimeout must be between one second")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ActorCallTimeout", "00:00:00.500", "Handoff:Dapr:ActorCallTimeout must be between one second")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:CompletionTopic", "   ", "Handoff:Dapr:CompletionTopic must be a name without spaces")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:PubSubName", "", "Handoff:Dapr:PubSubName must be a name without spaces")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:UpdatesTopic", "coding agents", "Handoff:Dapr:UpdatesTopic must be a name without spaces")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:UpdatesTopic", "coding-agents\u001b", "Handoff:Dapr:UpdatesTopic must be a name without spaces")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:DeadLetterTopic", "autofix-run-completed", "Handoff:Dapr:DeadLetterTopic must differ from Handoff:Dapr:CompletionTopic")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:DeadLetterTopic", "Autofix-Run-Completed", "Handoff:Dapr:DeadLetterTopic must differ from Handoff:Dapr:CompletionTopic")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:UpdatesTopic", "autofix-run-completed", "Handoff:Dapr:UpdatesTopic must differ from Handoff:Dapr:CompletionTopic")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:UpdatesTopic", "AUTOFIX-RUN-COMPLETED-DEADLETTER", "Handoff:Dapr:UpdatesTopic must differ from Handoff:Dapr:DeadLetterTopic")]
    public void A_setting_that_would_fail_later_or_vanish_is_refused_at_start_by_its_key(HostingMode mode, string key, string value, string expected)
    {
        var failures = Validate(mode, new Dictionary<string, string?>(ValidIn(mode)) { [key] = value });

        Assert.Contains(failures, failure => failure.Contains(expected, StringComparison.Ordinal));
        Assert.DoesNotContain(failures, failure => failure.Contains(value, StringComparison.Ordinal) && key.EndsWith("ApiKey", StringComparison.Ordinal));
    }

    /// <summary>The documented upper bounds are inclusive: the bound itself starts, the next value up does not.</summary>
    [Theory]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:SchedulePollInterval", "30.00:00:00", "30.00:00:00.001")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:ScheduleLease", "01:00:00", "01:00:00.001")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:MaxConcurrentWakeups", "1024", "1025")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:RememberedEvents", "1048576", "1048577")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:ProviderCallGrace", "00:05:00", "00:05:00.001")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:SidecarWaitTimeout", "01:00:00", "01:00:00.001")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ShutdownDrain", "00:05:00", "00:05:00.001")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ProviderCallGrace", "00:05:00", "00:05:00.001")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ActorCallTimeout", "1.00:00:00", "1.00:00:00.001")]
    [InlineData(HostingMode.Embedded, "Handoff:MaxRequestBodyBytes", "67108864", "67108865")]
    [InlineData(HostingMode.Embedded, "Handoff:MaxInstructionLength", "65536", "65537")]
    public void A_setting_at_its_upper_bound_starts_and_one_past_it_stops_start_up_by_its_key(HostingMode mode, string key, string atBound, string pastBound)
    {
        // Room for the longest instruction allowed, which the prompt must always fit.
        var settings = new Dictionary<string, string?>(ValidIn(mode)) { ["Handoff:Integrations:42:PromptMaxLength"] = "100000" };

        Assert.Empty(Validate(mode, new Dictionary<string, string?>(settings) { [key] = atBound }));
        var failure = Assert.Single(Validate(mode, new Dictionary<string, string?>(settings) { [key] = pastBound }));
        Assert.StartsWith(key + " must be", failure, StringComparison.Ordinal);
    }

    /// <summary>
    /// The documented lower bounds are inclusive too: the bound itself starts, the next value down does not. Written
    /// with an instruction length whose prompt floor (it + 1024) lies above 8192, so that PromptMaxLength meets that floor.
    /// </summary>
    [Theory]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:ScheduleLease", "00:00:01", "00:00:00.999")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:RememberedEvents", "0", "-1")]
    [InlineData(HostingMode.Embedded, "Handoff:Embedded:MaxConcurrentWakeups", "1", "0")]
    [InlineData(HostingMode.Dapr, "Handoff:Dapr:ActorCallTimeout", "00:00:01", "00:00:00.999")]
    [InlineData(HostingMode.Embedded, "Handoff:MaxRequestBodyBytes", "1024", "1023")]
    [InlineData(HostingMode.Embedded, "Handoff:MaxInstructionLength", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:RateLimits:TriggersPerGroupPerMinute", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:RateLimits:WebhooksPerIntegrationPerMinute", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:MaxParallelLaunches", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:MaxAttempts", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:MaxRepositories", "1", "0")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:RetryFactor", "1", "0.999")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:PollInterval", "00:00:00.001", "00:00:00")]
    [InlineData(HostingMode.Embedded, "Handoff:Launch:RetryMaxDelay", "00:00:30", "00:00:29.999")] // RetryBaseDelay's default
    [InlineData(HostingMode.Embedded, "Handoff:Launch:PollMaxInterval", "00:01:00", "00:00:59.999")] // PollInterval's default
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:RequestTimeout", "00:00:00.010", "00:00:00.009")]
    [InlineData(HostingMode.Embedded, "Handoff:Integrations:42:PromptMaxLength", "9024", "9023")]
    public void A_setting_at_its_lower_bound_starts_and_one_below_it_stops_start_up_by_its_key(HostingMode mode, string key, string atBound, string belowBound)
    {
        var settings = new Dictionary<string, string?>(ValidIn(mode)) { ["Handoff:MaxInstructionLength"] = "8000", ["Handoff:Integrations:42:PromptMaxLength"] = "100000" };

        Assert.Empty(Validate(mode, new Dictionary<string, string?>(settings) { [key] = atBound }));
        var failure = Assert.Single(Validate(mode, new Dictionary<string, string?>(settings) { [key] = belowBound }));
        // The key is the subject of its failure (the two rate limits share one line).
        Assert.Matches($"^(\\S+ and )?{System.Text.RegularExpressions.Regex.Escape(key)}( and \\S+)? must be", failure);
    }

    /// <summary>
    /// The launch durations' upper bounds (30 days; a year for an agent's age; a day for a provider call), all at once:
    /// together they start, and each one past its bound stops start-up by its key.
    /// </summary>
    [Theory]
    [InlineData("Handoff:Launch:RetryBaseDelay", "30.00:00:00.001")]
    [InlineData("Handoff:Launch:RetryMaxDelay", "30.00:00:00.001")]
    [InlineData("Handoff:Launch:InFlightTimeout", "30.00:00:00.001")]
    [InlineData("Handoff:Launch:PollInterval", "30.00:00:00.001")]
    [InlineData("Handoff:Launch:PollMaxInterval", "30.00:00:00.001")]
    [InlineData("Handoff:Launch:AgentMaxAge", "365.00:00:00.001")]
    [InlineData("Handoff:Integrations:42:RequestTimeout", "1.00:00:00.001")]
    public void Launch_durations_at_their_upper_bounds_start_and_one_past_stops_start_up_by_its_key(string key, string pastBound)
    {
        var atBounds = new Dictionary<string, string?>(Valid)
        {
            ["Handoff:Launch:RetryBaseDelay"] = "30.00:00:00", ["Handoff:Launch:RetryMaxDelay"] = "30.00:00:00",
            ["Handoff:Launch:InFlightTimeout"] = "30.00:00:00", ["Handoff:Launch:PollInterval"] = "30.00:00:00",
            ["Handoff:Launch:PollMaxInterval"] = "30.00:00:00", ["Handoff:Launch:AgentMaxAge"] = "365.00:00:00",
            ["Handoff:Integrations:42:RequestTimeout"] = "1.00:00:00",
        };

        Assert.Empty(Validate(HostingMode.Embedded, atBounds));
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(atBounds) { [key] = pastBound });
        Assert.Contains(failures, failure => failure.StartsWith(key + " must be", StringComparison.Ordinal));
    }

    /// <summary>
    /// The launch durations and the schedule's poll must be positive: the least one starts, zero stops start-up by its key.
    /// Without an integration, whose RequestTimeout rule names InFlightTimeout too and would answer for it.
    /// </summary>
    [Theory]
    [InlineData("Handoff:Launch:InFlightTimeout")]
    [InlineData("Handoff:Launch:RetryBaseDelay")]
    [InlineData("Handoff:Launch:PollInterval")]
    [InlineData("Handoff:Launch:AgentMaxAge")]
    [InlineData("Handoff:Embedded:SchedulePollInterval")]
    public void A_duration_of_zero_stops_start_up_by_its_key_and_the_least_positive_one_starts(string key)
    {
        var settings = new Dictionary<string, string?> { ["Handoff:DataPath"] = "handoff.db" };

        Assert.Empty(Validate(HostingMode.Embedded, new Dictionary<string, string?>(settings) { [key] = "00:00:00.001" }));
        var failure = Assert.Single(Validate(HostingMode.Embedded, new Dictionary<string, string?>(settings) { [key] = "00:00:00" }));
        Assert.StartsWith(key + " must be positive", failure, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("00:59:59", "Handoff:RunRetention must be between one hour and 3650 days")]
    [InlineData("3651.00:00:00", "Handoff:RunRetention must be between one hour and 3650 days")]
    [InlineData("0", "Handoff:RunRetention must be between one hour and 3650 days")]
    [InlineData("30", "Handoff:RunRetention is '30', which would be read as days")]
    public void A_run_retention_out_of_bounds_or_written_as_a_bare_number_stops_start_up(string value, string expected)
    {
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { ["Handoff:RunRetention"] = value });

        Assert.Equal([expected], failures.Select(failure => failure[..expected.Length]));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("01:00:00")]
    [InlineData("90.00:00:00")]
    [InlineData("3650.00:00:00")]
    public void A_run_retention_unset_or_within_bounds_is_taken(string? value)
    {
        var settings = new Dictionary<string, string?>(Valid);
        if (value is not null)
        {
            settings["Handoff:RunRetention"] = value;
        }

        Assert.Empty(Validate(HostingMode.Embedded, settings));
    }

    [Theory]
    [InlineData("app-token-from-daprd-0123 ")]
    [InlineData(" app-token-from-daprd-0123")]
    [InlineData("app-token-from-daprd-0123\n")]
    [InlineData("app-token-from\rdaprd-0123")]
    public void An_app_token_no_call_from_daprd_could_match_stops_start_up_without_being_echoed(string token)
    {
        // daprd sends APP_API_TOKEN as it is, and a header's value arrives trimmed (Go will not send one with a control
        // character at all): every call from daprd (subscriptions, events, actor calls) was refused, and nothing said why.
        var settings = new Dictionary<string, string?>(Valid) { ["Handoff:Integrations:42:Binding"] = "coding-agent-cursor", ["APP_API_TOKEN"] = token };

        var failures = Validate(HostingMode.Dapr, settings);

        Assert.Contains(failures, failure => failure.StartsWith("APP_API_TOKEN must not begin or end with spaces", StringComparison.Ordinal));
        Assert.DoesNotContain(failures, failure => failure.Contains("daprd-0123", StringComparison.Ordinal));
        // Embedded mode does not read it; and a token as daprd's documentation makes one (base64) passes.
        Assert.Empty(Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { ["APP_API_TOKEN"] = token }));
        Assert.Empty(Validate(HostingMode.Dapr, new Dictionary<string, string?>(settings) { ["APP_API_TOKEN"] = "tZL3XdZQoLLWfLHn0UPWEg==" }));
    }

    /// <summary>What only Dapr mode reads is checked only there: one left over from a Dapr set-up does not stop an embedded start.</summary>
    [Theory]
    [InlineData("Handoff:Dapr:ActorCallTimeout", "00:00:00.500")]
    [InlineData("Handoff:Dapr:SidecarWaitTimeout", "00:00:00")]
    [InlineData("Handoff:Dapr:PubSubName", "")]
    [InlineData("Handoff:Dapr:DeadLetterTopic", "autofix-run-completed")]
    [InlineData("Handoff:Dapr:UpdatesTopic", "autofix-run-completed-deadletter")]
    public void A_setting_only_dapr_mode_reads_is_refused_there_and_does_not_stop_embedded_start_up(string key, string value)
    {
        Assert.NotEmpty(Validate(HostingMode.Dapr, new Dictionary<string, string?>(ValidIn(HostingMode.Dapr)) { [key] = value }));
        Assert.Empty(Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [key] = value }));
    }

    /// <summary>What only embedded mode reads is checked only there: a data file or a provider's key or API left over from an embedded set-up does not stop a Dapr start.</summary>
    [Theory]
    [InlineData("Handoff:DataPath", "")]
    [InlineData("Handoff:DataPath", ":memory:")]
    [InlineData("Handoff:Integrations:42:ApiKey", "")]
    [InlineData("Handoff:Integrations:42:ApiKey", "key 0123456789")]
    [InlineData("Handoff:Integrations:42:BaseUrl", "ftp://h.example/")]
    public void A_setting_only_embedded_mode_reads_is_refused_there_and_does_not_stop_dapr_start_up(string key, string value)
    {
        Assert.NotEmpty(Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [key] = value }));
        Assert.Empty(Validate(HostingMode.Dapr, new Dictionary<string, string?>(ValidIn(HostingMode.Dapr)) { [key] = value }));
    }

    [Fact]
    public void An_app_token_with_a_tab_inside_is_taken()
    {
        // Go refuses a header with any other control character, not a tab; inside the token it is not trimmed away: usable.
        var settings = new Dictionary<string, string?>(Valid) { ["Handoff:Integrations:42:Binding"] = "coding-agent-cursor", ["APP_API_TOKEN"] = "app-token\tfrom-daprd" };

        Assert.Empty(Validate(HostingMode.Dapr, settings));
    }

    [Theory]
    [InlineData("Handoff:Launch:RetryBaseDelay", "30")]
    [InlineData("Handoff:Launch:PollInterval", "60")]
    [InlineData("Handoff:Launch:InFlightTimeout", "120")]
    public void A_bare_number_is_named_once_not_with_the_rules_its_reading_as_days_breaks(string key, string value)
    {
        // Seen trying the README's "a bare number (30) is refused": Handoff__Launch__RetryBaseDelay=30 also reported
        // "Handoff:Launch:RetryMaxDelay must be at least Handoff:Launch:RetryBaseDelay", a setting the operator never
        // touched (and InFlightTimeout=120 its own "at most 30 days" beside the bare-number message).
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [key] = value });

        Assert.Equal([$"{key} is '{value}', which would be read as days: write a duration as hh:mm:ss (00:00:30), or d.hh:mm:ss for days."], failures);
    }

    [Theory]
    [InlineData("HANDOFF:EMBEDDED:SCHEDULEPOLLINTERVAL", "1")]
    [InlineData("handoff:launch:retrybasedelay", "30")]
    [InlineData("handoff:launch:inflighttimeout", "120")]
    public void A_bare_number_under_a_key_written_in_another_letter_case_is_named_once_too(string key, string value)
    {
        // Keys are read in any letter case (HANDOFF__EMBEDDED__SCHEDULEPOLLINTERVAL=1 sets the schedule's poll): so is
        // the bare number found, which would poll once a day, and so are the rules its reading as days breaks left out.
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [key] = value });

        var failure = Assert.Single(failures);
        Assert.StartsWith($"{key} is '{value}', which would be read as days", failure, StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("1e3")]
    [InlineData("30s")]
    public void An_integration_duration_that_cannot_be_read_at_all_is_named_by_the_binder_and_not_said_to_be_read_as_days(string value)
    {
        // The binder drops the integration and says why; such a value is not read as days, so no line says it would be.
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { ["Handoff:Integrations:42:RequestTimeout"] = value });

        var failure = Assert.Single(failures);
        Assert.Contains("'Handoff:Integrations:42:RequestTimeout'", failure, StringComparison.Ordinal);
        Assert.DoesNotContain("read as days", failure, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bare_number_leaves_the_other_settings_errors_in_place()
    {
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid)
        {
            ["Handoff:Launch:RetryBaseDelay"] = "30",
            ["Handoff:Launch:MaxAttempts"] = "0",
            ["Handoff:Launch:PollMaxInterval"] = "00:00:01",
        });

        Assert.Equal(3, failures.Count);
        Assert.Contains(failures, failure => failure.StartsWith("Handoff:Launch:MaxAttempts must be at least 1", StringComparison.Ordinal));
        Assert.Contains(failures, failure => failure.StartsWith("Handoff:Launch:PollMaxInterval must be at least Handoff:Launch:PollInterval", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Handoff:Launch:InFlightTimeout", "120", "Handoff:Integrations:42:RequestTimeout", "00:00:00.001", "Handoff:Integrations:42:RequestTimeout must be at least 10 ms")]
    [InlineData("Handoff:Launch:RetryBaseDelay", "30", "Handoff:Launch:RetryMaxDelay", "45.00:00:00", "Handoff:Launch:RetryMaxDelay must be at least Handoff:Launch:RetryBaseDelay and at most 30 days")]
    public void A_bare_number_does_not_hide_another_settings_own_error_that_names_it(string bareKey, string bare, string key, string value, string expected)
    {
        // The other setting is wrong by its own bounds whatever the bare one is read as: its error is no consequence of
        // the reading as days, and hidden it is found only at the next start.
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [bareKey] = bare, [key] = value });

        Assert.Contains(failures, failure => failure.StartsWith(expected, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Handoff:Embedded:ProviderCallGrace", "0")]
    [InlineData("Handoff:Launch:AgentMaxAge", "1.00:00:00")]
    [InlineData("Handoff:Launch:PollInterval", "00:00:30")]
    public void A_duration_written_with_its_hours_and_minutes_or_as_zero_passes(string key, string value)
    {
        Assert.Empty(Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid) { [key] = value }));
    }

    [Fact]
    public void The_valid_settings_these_cases_start_from_pass()
    {
        Assert.Empty(Validate(HostingMode.Embedded, Valid));
    }

    [Fact]
    public void A_public_base_url_that_makes_the_webhook_url_longer_than_cursor_takes_is_refused_at_start()
    {
        // Cursor's launch takes webhook.url of at most 2048 characters: past it every launch of the integration is refused.
        var settings = new Dictionary<string, string?>(Valid)
        {
            ["Handoff:Integrations:42:WebhookSecret"] = "0123456789abcdef0123456789abcdef",
            ["Handoff:PublicBaseUrl"] = "https://h.example/" + new string('p', 2000),
        };

        var failures = Validate(HostingMode.Embedded, settings);

        Assert.Contains(failures, failure => failure.Contains("Handoff:PublicBaseUrl is too long", StringComparison.Ordinal));
        Assert.DoesNotContain(failures, failure => failure.Contains(new string('p', 100), StringComparison.Ordinal));

        // The longest base whose webhook URL still fits with the largest run id passes; one character more does not.
        var room = 2048 - "https://h.example/".Length - "/webhooks/cursor/42".Length - "?run_id=9007199254740991".Length;
        settings["Handoff:PublicBaseUrl"] = "https://h.example/" + new string('p', room);
        Assert.Empty(Validate(HostingMode.Embedded, settings));
        settings["Handoff:PublicBaseUrl"] = "https://h.example/" + new string('p', room + 1);
        Assert.NotEmpty(Validate(HostingMode.Embedded, settings));
    }

    [Fact]
    public void A_public_base_url_without_its_scheme_beside_a_cursor_webhook_secret_is_named_by_its_rule()
    {
        // The webhook URL's length is measured only on a base that is a URL: built on this one, it could not be made at all.
        var failures = Validate(HostingMode.Embedded, new Dictionary<string, string?>(Valid)
        {
            ["Handoff:Integrations:42:WebhookSecret"] = "0123456789abcdef0123456789abcdef",
            ["Handoff:PublicBaseUrl"] = "handoff.example.com",
        });

        Assert.Equal(["Handoff:PublicBaseUrl must be an absolute http(s) URL without user-info, query or fragment."], failures);
    }

    [Theory]
    [InlineData("1")]
    [InlineData("Embedded,Dapr")]
    [InlineData("0")]
    public void A_mode_is_taken_by_its_name_only(string mode)
    {
        Assert.False(HostingModes.TryParse(mode, out _));
    }

    private static List<string> Validate(HostingMode mode, IDictionary<string, string?> settings)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var options = configuration.GetSection(HandoffOptions.SectionName).Get<HandoffOptions>() ?? new HandoffOptions();
        var result = new HandoffOptionsValidator(mode, configuration).Validate(null, options);
        return result.Failed ? result.Failures.ToList() : [];
    }
}
