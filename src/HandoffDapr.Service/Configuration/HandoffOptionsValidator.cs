using HandoffDapr.Core.Providers.Cursor;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Api;
using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Configuration;

/// <summary>Checks the configuration at start and names each bad setting by its key.</summary>
/// <param name="configuration">Where the options were bound from: an integration the binder dropped is found there.</param>
public sealed class HandoffOptionsValidator(HostingMode mode, IConfiguration? configuration = null) : IValidateOptions<HandoffOptions>
{
    public ValidateOptionsResult Validate(string? name, HandoffOptions options)
    {
        // A bare number is read as days: a rule comparing another setting with it (say "RetryMaxDelay must be at least
        // RetryBaseDelay") would break from that reading alone and send the reader after a setting that is fine. Such a
        // comparison is left out; the other setting's own bounds are still checked, and the bare number's own message
        // stands for its reading. Only one read as days: one that could not be converted at all ("1e3") is named by the
        // binder's own message.
        var bareNumbers = DurationsReadAsDays().ToList();
        var readAsDays = bareNumbers.Select(bare => bare.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        var errors = new List<string>();
        CheckHosting(options, errors);
        CheckApi(options, errors);
        CheckEmbedded(options.Embedded, errors);
        CheckDapr(options.Dapr, errors);
        CheckLimits(options, errors);
        CheckLaunch(options.Launch, readAsDays, errors);
        CheckIntegrations(options, readAsDays, errors);

        // A setting read as days has its own bounds' error replaced by the bare number's message. Only an error whose
        // subject it is: another setting's error that merely names it (its own bounds broken) is kept.
        errors.RemoveAll(error => bareNumbers.Any(bare => IsAbout(error, bare.Key)));
        errors.AddRange(bareNumbers.Select(bare => bare.Message));
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>The mode and, in embedded mode, the SQLite file.</summary>
    private void CheckHosting(HandoffOptions options, List<string> errors)
    {
        if (!string.IsNullOrWhiteSpace(options.Mode) && !HostingModes.TryParse(options.Mode, out _))
        {
            errors.Add(HostingModes.InvalidModeMessage(options.Mode));
        }

        if (mode == HostingMode.Embedded && string.IsNullOrWhiteSpace(options.DataPath))
        {
            errors.Add("Handoff:DataPath must name the SQLite file of embedded mode.");
        }
        else if (mode == HostingMode.Embedded && (options.DataPath!.Trim().StartsWith(":memory:", StringComparison.OrdinalIgnoreCase)
            || options.DataPath.Trim().StartsWith("file:", StringComparison.OrdinalIgnoreCase)))
        {
            // Each connection would open a database of its own, empty: healthy at start, every request failing after.
            errors.Add("Handoff:DataPath must be a file's path (not ':memory:' or a 'file:' URI): its connections must share one database.");
        }
    }

    /// <summary>How the service is reached: its public base URL and the callers' token.</summary>
    private static void CheckApi(HandoffOptions options, List<string> errors)
    {
        // The webhook URL given to providers is this base with a path added: a query or fragment would swallow the path.
        if (options.PublicBaseUrl is { Length: > 0 } publicBase && !IsBaseUrl(publicBase))
        {
            errors.Add("Handoff:PublicBaseUrl must be an absolute http(s) URL without user-info, query or fragment.");
        }

        if (options.ApiToken is { Length: > 0 } apiToken && apiToken.Any(c => c is < '!' or > '~'))
        {
            // Callers' bearer tokens are compared trimmed: a configured one with spaces could never match. Nor could one
            // with other than ASCII from a browser (the status page): it sends such a header in Latin-1, which Kestrel
            // refuses with a bare 400 (a bearer token is ASCII, RFC 6750 §2.1).
            errors.Add("Handoff:ApiToken must not contain spaces, control characters or non-ASCII characters.");
        }
    }

    /// <summary>Handoff:Embedded, checked in either mode.</summary>
    private static void CheckEmbedded(EmbeddedOptions embedded, List<string> errors)
    {
        // Upper bounds too: a timer past ~49 days cannot be set (the scheduler would stop), and a long lease only
        // delays a hand-over (its renewal timer is a third of it).
        if (!IsPositiveAtMost(embedded.SchedulePollInterval, TimeSpan.FromDays(30)))
        {
            errors.Add("Handoff:Embedded:SchedulePollInterval must be positive and at most 30 days.");
        }

        if (!IsBetween(embedded.ScheduleLease, TimeSpan.FromSeconds(1), TimeSpan.FromHours(1)))
        {
            errors.Add("Handoff:Embedded:ScheduleLease must be between one second and one hour.");
        }

        if (embedded.RememberedEvents is < 0 or > 1_048_576)
        {
            errors.Add("Handoff:Embedded:RememberedEvents must be between 0 (off) and 1048576.");
        }

        if (embedded.MaxConcurrentWakeups is < 1 or > 1024)
        {
            errors.Add("Handoff:Embedded:MaxConcurrentWakeups must be between 1 and 1024.");
        }

        if (!IsBetween(embedded.ProviderCallGrace, TimeSpan.Zero, TimeSpan.FromMinutes(5)))
        {
            errors.Add("Handoff:Embedded:ProviderCallGrace must be between zero and five minutes.");
        }
    }

    /// <summary>Handoff:Dapr and daprd's APP_API_TOKEN; the shutdown drain and call grace in either mode.</summary>
    private void CheckDapr(DaprOptions dapr, List<string> errors)
    {
        if (mode == HostingMode.Dapr)
        {
            if (!IsBetween(dapr.ActorCallTimeout, TimeSpan.FromSeconds(1), TimeSpan.FromDays(1)))
            {
                errors.Add("Handoff:Dapr:ActorCallTimeout must be between one second and one day (and, to be useful, above the actorCall timeout of components/resiliency.yaml, 120 s).");
            }

            CheckDaprNames(dapr, errors);

            // daprd sends the app token as it is, and Kestrel trims a header's value (Go sends none with a control
            // character but a tab): a token with spaces at its ends could never match, and every call from daprd (the
            // subscriptions, every event, every actor call) would be refused with a 401, with nothing to say why.
            if (configuration?["APP_API_TOKEN"] is { Length: > 0 } appApiToken
                && (appApiToken.Trim() != appApiToken || appApiToken.Any(c => char.IsControl(c) && c != '\t')))
            {
                errors.Add("APP_API_TOKEN must not begin or end with spaces nor contain control characters (a line break from a secret's file): daprd's calls would never match it.");
            }

            if (!IsPositiveAtMost(dapr.SidecarWaitTimeout, TimeSpan.FromHours(1)))
            {
                errors.Add("Handoff:Dapr:SidecarWaitTimeout must be positive and at most one hour.");
            }
        }

        if (!IsBetween(dapr.ShutdownDrain, TimeSpan.Zero, TimeSpan.FromMinutes(5)))
        {
            errors.Add("Handoff:Dapr:ShutdownDrain must be between zero and five minutes (and below the pod's dapr.io/block-shutdown-duration).");
        }

        if (!IsBetween(dapr.ProviderCallGrace, TimeSpan.Zero, TimeSpan.FromMinutes(5)))
        {
            errors.Add("Handoff:Dapr:ProviderCallGrace must be between zero and five minutes.");
        }
    }

    /// <summary>The pub/sub and its three topics: names without spaces, the topics distinct.</summary>
    private static void CheckDaprNames(DaprOptions dapr, List<string> errors)
    {
        foreach (var (setting, value) in new[]
        {
            ("PubSubName", dapr.PubSubName), ("CompletionTopic", dapr.CompletionTopic),
            ("DeadLetterTopic", dapr.DeadLetterTopic), ("UpdatesTopic", dapr.UpdatesTopic),
        })
        {
            if (string.IsNullOrEmpty(value) || HasSpaces(value))
            {
                errors.Add($"Handoff:Dapr:{setting} must be a name without spaces.");
            }
        }

        // All three share one pub/sub: dead letters would go back to the topic they failed on, and the app's own
        // updates would come back to it as completion events or dead letters. Compared ignoring case, as brokers such
        // as Azure Service Bus compare them.
        var topics = new[]
        {
            ("CompletionTopic", dapr.CompletionTopic), ("DeadLetterTopic", dapr.DeadLetterTopic),
            ("UpdatesTopic", dapr.UpdatesTopic),
        };
        for (var later = 1; later < topics.Length; later++)
        {
            for (var earlier = 0; earlier < later; earlier++)
            {
                if (string.Equals(topics[later].Item2, topics[earlier].Item2, StringComparison.OrdinalIgnoreCase))
                {
                    errors.Add($"Handoff:Dapr:{topics[later].Item1} must differ from Handoff:Dapr:{topics[earlier].Item1}, ignoring case.");
                }
            }
        }
    }

    /// <summary>How long runs are kept, and how much a caller may send.</summary>
    private static void CheckLimits(HandoffOptions options, List<string> errors)
    {
        // Shorter than an hour, a run could go while a redelivery of the event that settled it is still on its way
        // (harmless, the tombstone answers it, but the run's record would be gone before anyone read it).
        if (options.RunRetention is { } retention
            && !IsBetween(retention, HandoffOptions.MinRunRetention, HandoffOptions.MaxRunRetention))
        {
            errors.Add("Handoff:RunRetention must be between one hour and 3650 days (or unset, to keep every run).");
        }

        if (options.MaxRequestBodyBytes is < 1024 or > 64 * 1024 * 1024)
        {
            errors.Add("Handoff:MaxRequestBodyBytes must be between 1 KiB and 64 MiB.");
        }

        if (options.MaxInstructionLength is < 1 or > 65536)
        {
            errors.Add("Handoff:MaxInstructionLength must be between 1 and 65536.");
        }

        if (options.RateLimits.TriggersPerGroupPerMinute < 1 || options.RateLimits.WebhooksPerIntegrationPerMinute < 1)
        {
            errors.Add("Handoff:RateLimits:TriggersPerGroupPerMinute and Handoff:RateLimits:WebhooksPerIntegrationPerMinute must be at least 1.");
        }
    }

    /// <summary>Handoff:Launch: the engine's parallelism, retries and polling.</summary>
    private static void CheckLaunch(LaunchOptions launch, IReadOnlySet<string> readAsDays, List<string> errors)
    {
        void LaunchRule(bool broken, string setting, string rule)
        {
            if (broken)
            {
                errors.Add($"Handoff:Launch:{setting} {rule}");
            }
        }

        LaunchRule(launch.MaxParallelLaunches < 1, nameof(launch.MaxParallelLaunches), "must be at least 1.");
        LaunchRule(launch.MaxAttempts < 1, nameof(launch.MaxAttempts), "must be at least 1.");
        LaunchRule(launch.MaxRepositories is < 1 or > 50, nameof(launch.MaxRepositories), "must be between 1 and 50.");
        LaunchRule(!double.IsFinite(launch.RetryFactor) || launch.RetryFactor < 1, nameof(launch.RetryFactor), "must be a number of at least 1.");
        // Durations at most 30 days (a year for an agent's age): past ~49 days a timer cannot be set at all, and the
        // engine sets one for an attempt's in-flight deadline.
        var month = TimeSpan.FromDays(30);

        // A maximum: at least its base (not compared with a base read as days, see Validate) and at most 30 days.
        void MaximumRule(TimeSpan maximum, TimeSpan floor, string setting, string floorSetting) =>
            LaunchRule(
                (maximum < floor && !readAsDays.Contains($"Handoff:Launch:{floorSetting}")) || maximum > month,
                setting, $"must be at least Handoff:Launch:{floorSetting} and at most 30 days.");

        LaunchRule(!IsPositiveAtMost(launch.RetryBaseDelay, month), nameof(launch.RetryBaseDelay),
            "must be positive and at most 30 days.");
        MaximumRule(
            launch.RetryMaxDelay, launch.RetryBaseDelay, nameof(launch.RetryMaxDelay), nameof(launch.RetryBaseDelay));
        LaunchRule(!IsPositiveAtMost(launch.InFlightTimeout, month), nameof(launch.InFlightTimeout),
            "must be positive and at most 30 days.");
        LaunchRule(!IsPositiveAtMost(launch.PollInterval, month), nameof(launch.PollInterval),
            "must be positive and at most 30 days.");
        MaximumRule(
            launch.PollMaxInterval, launch.PollInterval, nameof(launch.PollMaxInterval), nameof(launch.PollInterval));
        LaunchRule(!IsPositiveAtMost(launch.AgentMaxAge, TimeSpan.FromDays(365)), nameof(launch.AgentMaxAge),
            "must be positive and at most 365 days.");
    }

    /// <summary>Handoff:Integrations: every one configured was bound, and each bound one is usable.</summary>
    private void CheckIntegrations(HandoffOptions options, IReadOnlySet<string> readAsDays, List<string> errors)
    {
        // The binder drops an integration one of whose settings it cannot convert (a duration of '1e3', a boolean of
        // 'yes'), silently: that integration would be missing, its events and triggers answered as for an unknown one.
        foreach (var configured in configuration?.GetSection($"{HandoffOptions.SectionName}:Integrations").GetChildren() ?? [])
        {
            if (!options.Integrations.ContainsKey(configured.Key))
            {
                errors.Add(UnreadableIntegration(configured));
            }
        }

        foreach (var (id, integration) in options.Integrations)
        {
            CheckIntegration(id, integration, options, readAsDays, errors);
        }
    }

    /// <summary>
    /// One integration: its id, provider, credentials, webhook secret, request timeout and prompt length.
    /// </summary>
    private void CheckIntegration(
        string id, IntegrationOptions integration, HandoffOptions options, IReadOnlySet<string> readAsDays,
        List<string> errors)
    {
        var key = $"Handoff:Integrations:{id}";
        // Written as the API and webhook paths write it (no sign, no leading zero, no space): webhooks find the
        // integration by that text, and "042" beside "42" would be two settings for one id.
        if (!Core.Model.WholeIds.TryParseCanonical(id, out _))
        {
            errors.Add($"{key}: the integration id must be a positive whole number (at most {Core.Model.WholeIds.Max}) without sign or leading zeros.");
        }

        var kind = ProviderKinds.Find(integration.Provider);
        if (kind is null)
        {
            errors.Add($"{key}:Provider must be one of: {string.Join(", ", ProviderKinds.All.Select(known => known.Name))}.");
        }

        CheckCredentials(key, integration, errors);
        CheckWebhookSecret(id, key, integration, kind, options.PublicBaseUrl, errors);

        // Outside Polly's 10 ms to one day the client cannot be built; at or past InFlightTimeout a call still
        // waiting for its answer would be taken for a lost launch and reconciled under it.
        if (!IsBetween(integration.RequestTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromDays(1))
            || (integration.RequestTimeout >= options.Launch.InFlightTimeout
                && !readAsDays.Contains("Handoff:Launch:InFlightTimeout")))
        {
            errors.Add($"{key}:RequestTimeout must be at least 10 ms, at most one day, and shorter than Handoff:Launch:InFlightTimeout ({options.Launch.InFlightTimeout}).");
        }

        if (integration.PromptMaxLength < 8192)
        {
            errors.Add($"{key}:PromptMaxLength must be at least 8192, room for the instructions.");
        }
        else if (integration.PromptMaxLength < options.MaxInstructionLength + Core.Prompts.PromptBuilder.HeadReserve)
        {
            // The caller's instruction is never cut: it must fit, with the opening, however long it is allowed to be.
            errors.Add($"{key}:PromptMaxLength must be at least Handoff:MaxInstructionLength ({options.MaxInstructionLength}) + {Core.Prompts.PromptBuilder.HeadReserve}.");
        }
    }

    /// <summary>
    /// How an integration's calls reach its provider: embedded, its API key and base URL; in Dapr mode, the output
    /// binding that holds the key.
    /// </summary>
    private void CheckCredentials(string key, IntegrationOptions integration, List<string> errors)
    {
        if (mode == HostingMode.Embedded)
        {
            if (string.IsNullOrWhiteSpace(integration.ApiKey))
            {
                errors.Add($"{key}:ApiKey is required in embedded mode.");
            }
            else if (integration.ApiKey.Any(c => c is < '!' or > '~'))
            {
                // It is sent in a header: a line break fails the client's construction, other text every request.
                errors.Add($"{key}:ApiKey must be printable ASCII without spaces.");
            }

            // An unknown provider has no API to default to, and is refused in CheckIntegration.
            if (integration.EffectiveBaseUrl is { } baseUrl && !IsBaseUrl(baseUrl))
            {
                // Paths are added to it: a query or fragment would swallow them.
                errors.Add($"{key}:BaseUrl must be an absolute http(s) URL without user-info, query or fragment.");
            }
        }
        else if (string.IsNullOrWhiteSpace(integration.Binding))
        {
            errors.Add($"{key}:Binding is required in Dapr mode (the output binding that holds the API key).");
        }
    }

    /// <summary>
    /// An integration's webhook secret: its length, and for Cursor the length of the webhook URL its launches give.
    /// </summary>
    private static void CheckWebhookSecret(
        string id, string key, IntegrationOptions integration, ProviderKind? kind, string? publicBaseUrl,
        List<string> errors)
    {
        if (integration.WebhookSecret is { Length: > 0 and (< 32 or > 256) })
        {
            errors.Add($"{key}:WebhookSecret must be 32 to 256 characters (what Cursor's API accepts; otherwise "
                + "every launch is refused).");
        }
        else if (integration.WebhookSecret is { Length: > 0 } && string.IsNullOrWhiteSpace(integration.WebhookSecret))
        {
            errors.Add($"{key}:WebhookSecret must not be blank.");
        }
        else if (kind is { Name: CursorAgentsProvider.Name } && integration.WebhookSecret is { Length: > 0 }
            && publicBaseUrl is { Length: > 0 } webhookBase && IsBaseUrl(webhookBase)
            && kind.WebhookUrl(webhookBase, id) is { } webhookUrl
            && LongestWebhookUrl(webhookUrl) is var longest && longest > MaxCursorWebhookUrlLength)
        {
            // Cursor refuses a launch whose webhook.url is longer (its v0 API: maxLength 2048): every launch would
            // fail.
            errors.Add($"Handoff:PublicBaseUrl is too long: the webhook URL given to Cursor for {key} can be {longest} "
                + $"characters, Cursor takes at most {MaxCursorWebhookUrlLength}.");
        }
    }

    /// <summary>Whether a duration is within the bounds its rule's message names, both included.</summary>
    private static bool IsBetween(TimeSpan value, TimeSpan min, TimeSpan max) => value >= min && value <= max;

    /// <summary>Whether a duration is above zero and within the bound its rule's message names.</summary>
    private static bool IsPositiveAtMost(TimeSpan value, TimeSpan max) => value > TimeSpan.Zero && value <= max;

    /// <summary>The longest <c>webhook.url</c> Cursor's launch takes.</summary>
    private const int MaxCursorWebhookUrlLength = 2048;

    /// <summary>
    /// The length of the webhook URL an integration's launches send at most: the one IntegrationCatalog builds, with the
    /// largest run id on it (as the engine adds it).
    /// </summary>
    private static int LongestWebhookUrl(Uri webhookUrl) =>
        new Uri($"{webhookUrl.AbsoluteUri}?run_id={Core.Model.WholeIds.Max}").AbsoluteUri.Length;

    private static bool IsBaseUrl(string? value) =>
        Uri.TryCreate(value, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
        && uri.UserInfo.Length == 0 && uri.Query.Length == 0 && uri.Fragment.Length == 0 && !value!.Contains('?') && !value.Contains('#');

    private static bool HasSpaces(string value) => value.Any(c => char.IsWhiteSpace(c) || char.IsControl(c));

    /// <summary>
    /// A duration written as a bare number ("30") is read by .NET as that many days, which passes the bounds of most
    /// settings: one meant as seconds would poll once a month. Every duration is written with its hours and minutes
    /// (but 0, which is 0 in any unit). One without a colon that is not a number ("1e3", "30s") is not read at all: the
    /// binder's own message names it.
    /// </summary>
    private IEnumerable<(string Key, string Message)> DurationsReadAsDays() =>
        from setting in configuration?.GetSection(HandoffOptions.SectionName).AsEnumerable() ?? []
        where setting.Value is { Length: > 0 } value && !value.Contains(':') && value.Trim() != "0"
            && DurationSettings.Contains(setting.Key[(setting.Key.LastIndexOf(':') + 1)..])
            && TimeSpan.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _)
        select (setting.Key, $"{setting.Key} is '{PrintableText.Bounded(setting.Value!, 40)}', which would be read as days: write a duration as hh:mm:ss (00:00:30), or d.hh:mm:ss for days.");

    /// <summary>Whether a message is about the setting: it opens with its whole key (in any letter case, not a longer key that starts with it).</summary>
    private static bool IsAbout(string message, string key) =>
        message.StartsWith(key, StringComparison.OrdinalIgnoreCase) && (message.Length == key.Length || !char.IsLetterOrDigit(message[key.Length]));

    private static readonly HashSet<string> DurationSettings = new(
        new[] { typeof(HandoffOptions), typeof(IntegrationOptions), typeof(DaprOptions), typeof(LaunchOptions), typeof(EmbeddedOptions), typeof(RateLimitOptions) }
            .SelectMany(type => type.GetProperties())
            .Where(property => (property.PropertyType == typeof(TimeSpan) || property.PropertyType == typeof(TimeSpan?)) && property.CanWrite)
            .Select(property => property.Name),
        StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// What the binder says of the setting it could not convert: its key and the value it was given, as start-up says of
    /// any setting it cannot convert. Only a setting of another type than text fails so, never a key or a secret.
    /// </summary>
    private static string UnreadableIntegration(IConfigurationSection section)
    {
        try
        {
            section.Get<IntegrationOptions>();
            return $"{section.Path} could not be read.";
        }
        catch (InvalidOperationException exception)
        {
            return exception.Message;
        }
    }
}
