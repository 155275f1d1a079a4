using System.Net;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.Configuration;

public sealed class HostingModeTests
{
    [Theory]
    [InlineData(null, null, null, HostingMode.Embedded)]
    [InlineData(null, "handoff", null, HostingMode.Dapr)]
    [InlineData(null, null, "3500", HostingMode.Dapr)]
    [InlineData("Embedded", "handoff", "3500", HostingMode.Embedded)]
    [InlineData("dapr", null, null, HostingMode.Dapr)]
    // A value with spaces around it (an .env line, a quoted YAML value) still names its mode.
    [InlineData(" Dapr ", null, null, HostingMode.Dapr)]
    // A blank mode (Handoff__Mode set to spaces) is no mode: the sidecar's environment chooses, as for an empty one.
    [InlineData("  ", "handoff", null, HostingMode.Dapr)]
    [InlineData("  ", null, null, HostingMode.Embedded)]
    public void Explicit_mode_wins_else_a_sidecar_environment_means_dapr(string? mode, string? appId, string? daprHttpPort, HostingMode expected)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Handoff:Mode"] = mode,
            ["APP_ID"] = appId,
            ["DAPR_HTTP_PORT"] = daprHttpPort,
        }).Build();

        Assert.Equal(expected, HostingModes.Resolve(configuration));
    }

    /// <summary>
    /// The mode is found from the environment when not set, and start-up said nothing of it: an app started without the
    /// sidecar's variables ran embedded, on a data file of its own, with no line saying so or which file.
    /// </summary>
    [Fact]
    public async Task Start_up_says_which_mode_runs_how_it_was_chosen_and_which_data_file_embedded_mode_uses()
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File("mode-log.db"), cursor.Url) { Logs = logs };

        Assert.Equal(HttpStatusCode.OK, (await factory.CreateClient().GetAsync("/healthz")).StatusCode);

        var line = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HostingModeChosen");
        Assert.Equal(4501, line.Id.Id);
        Assert.Equal(LogLevel.Information, line.Level);
        Assert.Equal("Embedded", line.GetStructuredStateValue("Mode"));
        Assert.Equal("set by Handoff:Mode", line.GetStructuredStateValue("ChosenBy"));
        Assert.Equal(temp.File("mode-log.db"), line.GetStructuredStateValue("RunStore"));
    }

    /// <summary>How the mode was chosen, by the settings' names: never their values.</summary>
    [Theory]
    [InlineData("Dapr", "app-7f", null, "set by Handoff:Mode")]
    [InlineData(null, "app-7f", null, "detected: APP_ID or DAPR_HTTP_PORT is set")]
    [InlineData(null, null, "3500", "detected: APP_ID or DAPR_HTTP_PORT is set")]
    [InlineData(null, null, null, "detected: neither APP_ID nor DAPR_HTTP_PORT is set")]
    public void How_the_mode_was_chosen_names_the_settings_it_went_by(string? mode, string? appId, string? daprHttpPort, string chosenBy)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Handoff:Mode"] = mode,
            ["APP_ID"] = appId,
            ["DAPR_HTTP_PORT"] = daprHttpPort,
        }).Build();

        Assert.Equal(chosenBy, HostingModes.ChosenBy(configuration));
    }

    [Fact]
    public void Unknown_mode_is_refused_with_the_setting_named()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Handoff:Mode"] = "Kubernetes" }).Build();

        var error = Assert.Throws<OptionsValidationException>(() => HostingModes.Resolve(configuration));
        Assert.Contains("Handoff:Mode", error.Message);
    }

    [Fact]
    public void Missing_api_key_in_embedded_mode_stops_start_up_and_names_the_setting()
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent" } } };

        var result = new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains("Handoff:Integrations:42:ApiKey", result.FailureMessage);
    }

    [Theory]
    [InlineData(-5)]
    [InlineData(0)]
    [InlineData(7200)]
    public void Sidecar_wait_that_cannot_be_a_timer_is_refused_in_dapr_mode(int seconds)
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent", Binding = "coding-agent-cursor" } } };
        Assert.True(new HandoffOptionsValidator(HostingMode.Dapr).Validate(null, options).Succeeded);
        options.Dapr.SidecarWaitTimeout = TimeSpan.FromSeconds(seconds);

        var result = new HandoffOptionsValidator(HostingMode.Dapr).Validate(null, options);

        Assert.Contains("Handoff:Dapr:SidecarWaitTimeout", result.FailureMessage);
    }

    [Fact]
    public void Dapr_mode_needs_a_binding_not_a_key()
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent" } } };

        var result = new HandoffOptionsValidator(HostingMode.Dapr).Validate(null, options);

        Assert.Contains("Handoff:Integrations:42:Binding", result.FailureMessage);
        Assert.DoesNotContain("ApiKey", result.FailureMessage);
    }

    [Theory]
    [InlineData("short-secret")]
    [InlineData("0123456789abcdef0123456789abcde")] // 31 characters: one short of Cursor's least
    [InlineData("a-secret-longer-than-the-256-characters-cursor-accepts-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")]
    public void Webhook_secret_cursor_would_refuse_is_refused_at_start(string secret)
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent", ApiKey = "k", WebhookSecret = secret } } };

        var result = new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options);

        Assert.Contains("WebhookSecret", result.FailureMessage);
    }

    /// <summary>The bounds Cursor's API takes are themselves taken: 32 and 256 characters.</summary>
    [Theory]
    [InlineData(32)]
    [InlineData(256)]
    public void Webhook_secret_of_32_to_256_characters_is_accepted(int length)
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent", ApiKey = "k", WebhookSecret = new string('s', length) } } };

        var result = new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options);

        Assert.DoesNotContain("WebhookSecret", result.FailureMessage ?? string.Empty);
    }

    public static TheoryData<string, Action<HandoffOptions>> OutOfRangeSettings => new()
    {
        { "Handoff:RateLimits:TriggersPerGroupPerMinute", options => options.RateLimits.TriggersPerGroupPerMinute = 0 },
        { "Handoff:RateLimits:WebhooksPerIntegrationPerMinute", options => options.RateLimits.WebhooksPerIntegrationPerMinute = -1 },
        // An instruction that could fill the prompt alone would leave no room for the analysis, or break the cap.
        { "Handoff:Integrations:42:PromptMaxLength", options => options.MaxInstructionLength = 30_000 },
        { "Handoff:Integrations:42:PromptMaxLength", options => (options.MaxInstructionLength, options.Integrations["42"].PromptMaxLength) = (8192, 8192) },
        { "Handoff:MaxInstructionLength", options => options.MaxInstructionLength = -1 },
        { "Handoff:Embedded:SchedulePollInterval", options => options.Embedded.SchedulePollInterval = TimeSpan.FromDays(60) },
        { "Handoff:Embedded:ScheduleLease", options => options.Embedded.ScheduleLease = TimeSpan.FromDays(200) },
        { "Handoff:Embedded:MaxConcurrentWakeups", options => options.Embedded.MaxConcurrentWakeups = 0 },
        { "Handoff:Integrations:42:RequestTimeout", options => options.Integrations["42"].RequestTimeout = TimeSpan.Zero },
        { "Handoff:Integrations:42:RequestTimeout", options => options.Integrations["42"].RequestTimeout = TimeSpan.FromDays(2) },
        { "Handoff:Integrations:42:RequestTimeout", options => options.Launch.InFlightTimeout = options.Integrations["42"].RequestTimeout },
        { "Handoff:Launch:MaxParallelLaunches", options => options.Launch.MaxParallelLaunches = 0 },
        { "Handoff:Launch:MaxAttempts", options => options.Launch.MaxAttempts = 0 },
        { "Handoff:Launch:MaxRepositories", options => options.Launch.MaxRepositories = 51 },
        { "Handoff:Launch:RetryFactor", options => options.Launch.RetryFactor = 0.5 },
        { "Handoff:Launch:RetryBaseDelay", options => options.Launch.RetryBaseDelay = TimeSpan.Zero },
        { "Handoff:Launch:RetryMaxDelay", options => options.Launch.RetryMaxDelay = options.Launch.RetryBaseDelay / 2 },
        { "Handoff:Launch:PollInterval", options => options.Launch.PollInterval = TimeSpan.FromSeconds(-1) },
        { "Handoff:Launch:PollMaxInterval", options => options.Launch.PollMaxInterval = options.Launch.PollInterval / 2 },
        { "Handoff:Launch:AgentMaxAge", options => options.Launch.AgentMaxAge = TimeSpan.Zero },
        { "Handoff:Dapr:ShutdownDrain", options => options.Dapr.ShutdownDrain = TimeSpan.FromMinutes(10) },
        { "Handoff:Dapr:ProviderCallGrace", options => options.Dapr.ProviderCallGrace = TimeSpan.FromSeconds(-1) },
        { "Handoff:Dapr:ProviderCallGrace", options => options.Dapr.ProviderCallGrace = TimeSpan.FromMinutes(10) },
        { "Handoff:Embedded:ProviderCallGrace", options => options.Embedded.ProviderCallGrace = TimeSpan.FromSeconds(-1) },
        { "Handoff:Embedded:ProviderCallGrace", options => options.Embedded.ProviderCallGrace = TimeSpan.FromMinutes(10) },
        // A timer past ~49 days cannot be set: the first trigger would fail instead of start-up.
        { "Handoff:Launch:InFlightTimeout", options => options.Launch.InFlightTimeout = TimeSpan.FromDays(60) },
        { "Handoff:Launch:RetryMaxDelay", options => options.Launch.RetryMaxDelay = TimeSpan.FromDays(60) },
        { "Handoff:Launch:PollMaxInterval", options => options.Launch.PollMaxInterval = TimeSpan.FromDays(60) },
        { "Handoff:Launch:AgentMaxAge", options => options.Launch.AgentMaxAge = TimeSpan.MaxValue },
        // Zero would have the schedule loop check its table without pause.
        { "Handoff:Embedded:SchedulePollInterval", options => options.Embedded.SchedulePollInterval = TimeSpan.Zero },
        // Its renewal timer is a third of it: under a second, a wake-up would be renewed or lost over and over.
        { "Handoff:Embedded:ScheduleLease", options => options.Embedded.ScheduleLease = TimeSpan.FromMilliseconds(500) },
        { "Handoff:Embedded:MaxConcurrentWakeups", options => options.Embedded.MaxConcurrentWakeups = 1025 },
        { "Handoff:Embedded:RememberedEvents", options => options.Embedded.RememberedEvents = -1 },
        { "Handoff:Dapr:ShutdownDrain", options => options.Dapr.ShutdownDrain = TimeSpan.FromSeconds(-1) },
        { "Handoff:MaxRequestBodyBytes", options => options.MaxRequestBodyBytes = 64L * 1024 * 1024 + 1 },
        // Below 1 KiB not even a small snapshot or trigger fits: every event and trigger would be a 413.
        { "Handoff:MaxRequestBodyBytes", options => options.MaxRequestBodyBytes = 1023 },
        // Refused for itself, not only through a prompt cap too small for it.
        { "Handoff:MaxInstructionLength", options => (options.MaxInstructionLength, options.Integrations["42"].PromptMaxLength) = (65537, 100_000) },
        // No repository at all per run: every trigger would be refused.
        { "Handoff:Launch:MaxRepositories", options => options.Launch.MaxRepositories = 0 },
        { "Handoff:Launch:AgentMaxAge", options => options.Launch.AgentMaxAge = TimeSpan.FromDays(366) },
        // A misspelt provider type: the integration could never be called.
        { "Handoff:Integrations:42:Provider", options => options.Integrations["42"].Provider = "cursor" },
        // A provider's name is written as the README lists it, in its letter case too.
        { "Handoff:Integrations:42:Provider", options => options.Integrations["42"].Provider = "Cursor_Background_Agent" },
        // Under 8192 even though the default instruction length (4096) and its opening would fit.
        { "Handoff:Integrations:42:PromptMaxLength", options => options.Integrations["42"].PromptMaxLength = 8191 },
        // One past what Cursor's API accepts: every launch would be refused.
        { "Handoff:Integrations:42:WebhookSecret", options => options.Integrations["42"].WebhookSecret = new string('s', 257) },
        // Handoff__DataPath set empty: no SQLite file named.
        { "Handoff:DataPath", options => options.DataPath = "" },
        // appsettings.json ships the keys empty: an operator who does not fill one in is told so at start.
        { "Handoff:Integrations:42:ApiKey", options => options.Integrations["42"].ApiKey = "" },
    };

    [Theory]
    [InlineData(40, 30, 30)]
    [InlineData(20, 30, 15)]
    [InlineData(5, 30, 0)]
    [InlineData(0, 30, 0)]
    [InlineData(40, 0, 0)]
    public void Provider_call_grace_is_cut_to_leave_the_drain_time_to_record_and_a_short_drain_still_starts(int drainSeconds, int graceSeconds, int appliedSeconds)
    {
        // A drain of 20 s, or none, was a valid setting before the grace existed: it still starts, with less grace.
        var options = new HandoffOptions { Dapr = { ShutdownDrain = TimeSpan.FromSeconds(drainSeconds), ProviderCallGrace = TimeSpan.FromSeconds(graceSeconds) } };

        Assert.True(new HandoffOptionsValidator(HostingMode.Dapr).Validate(null, options).Succeeded);
        Assert.Equal(TimeSpan.FromSeconds(appliedSeconds), options.Dapr.EffectiveProviderCallGrace);
    }

    [Theory]
    [InlineData(HostingMode.Embedded)]
    [InlineData(HostingMode.Dapr)]
    public void Shutdown_waits_past_the_provider_call_grace_for_the_answers_to_be_recorded(HostingMode mode)
    {
        // Calls still under way when the grace ends are stopped and recorded as unknown: that record needs time before the host stops.
        var options = new HandoffOptions { Dapr = { ShutdownDrain = TimeSpan.FromSeconds(20) }, Embedded = { ProviderCallGrace = TimeSpan.FromSeconds(20) } };

        Assert.True(new HandoffOptionsValidator(mode).Validate(null, options).Succeeded);
        Assert.True(options.ShutdownWaitIn(mode) - options.ProviderCallGraceIn(mode) >= DaprOptions.RecordingTime);
    }

    [Theory]
    [InlineData("cursor_background_agent", "api.cursor.com")]
    [InlineData("github_copilot_agent", "api.github.com")]
    public void An_integration_without_a_base_url_calls_its_providers_public_api(string provider, string host)
    {
        // The README's default for BaseUrl is "the provider's": a Copilot integration must not be sent to Cursor.
        var integration = new IntegrationOptions { Provider = provider, BaseUrl = "" };

        Assert.Equal(host, new Uri(integration.EffectiveBaseUrl!).Host);
    }

    [Fact]
    public void Every_launch_setting_reaches_the_engine()
    {
        // Each one away from its default: a setting left out of the engine's options would be ignored without a word.
        var launch = new LaunchOptions
        {
            MaxParallelLaunches = 3, InFlightTimeout = TimeSpan.FromMinutes(7), MaxRepositories = 9, RetryBaseDelay = TimeSpan.FromSeconds(11),
            RetryFactor = 2.5, RetryMaxDelay = TimeSpan.FromMinutes(13), MaxAttempts = 2, PollInterval = TimeSpan.FromSeconds(17),
            PollMaxInterval = TimeSpan.FromMinutes(19), AgentMaxAge = TimeSpan.FromHours(23),
        };

        var engine = launch.ToEngineOptions();

        Assert.Equal(
            (launch.MaxParallelLaunches, launch.InFlightTimeout, launch.MaxRepositories, launch.RetryBaseDelay, launch.RetryFactor, launch.RetryMaxDelay, launch.MaxAttempts, launch.PollInterval, launch.PollMaxInterval, launch.AgentMaxAge),
            (engine.MaxParallelLaunches, engine.InFlightTimeout, engine.MaxRepositories, engine.Retry.BaseDelay, engine.Retry.Factor, engine.Retry.MaxDelay, engine.Retry.MaxAttempts, engine.PollInterval, engine.PollMaxInterval, engine.AgentMaxAge));
    }

    [Theory]
    [InlineData("042")]
    [InlineData("+42")]
    [InlineData(" 42")]
    [InlineData("4_2")]
    [InlineData("0")]
    [InlineData("9007199254740992")]
    public void Integration_id_not_written_as_the_api_writes_it_is_refused(string id)
    {
        // Webhooks find an integration by its id as text: "042" would never be found, and beside "42" it is the same id twice.
        var options = new HandoffOptions { Integrations = { [id] = new IntegrationOptions { Provider = "cursor_background_agent", ApiKey = "k" } } };

        var result = new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains($"Handoff:Integrations:{id}: the integration id", result.FailureMessage);
    }

    [Theory]
    [MemberData(nameof(OutOfRangeSettings))]
    public void Out_of_range_setting_stops_start_up_and_names_the_key(string key, Action<HandoffOptions> change)
    {
        var options = new HandoffOptions { Integrations = { ["42"] = new IntegrationOptions { Provider = "cursor_background_agent", ApiKey = "k" } } };
        Assert.True(new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options).Succeeded);
        change(options);

        var result = new HandoffOptionsValidator(HostingMode.Embedded).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains(key, result.FailureMessage);
    }
}
