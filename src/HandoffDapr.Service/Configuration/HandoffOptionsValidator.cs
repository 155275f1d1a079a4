using HandoffDapr.Core.Providers.Cursor;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Configuration;

/// <summary>Checks the configuration at start and names each bad setting by its key.</summary>
public sealed class HandoffOptionsValidator(HostingMode mode) : IValidateOptions<HandoffOptions>
{
    private static readonly HashSet<string> KnownProviders = [CursorAgentsProvider.Name, Core.Providers.Copilot.CopilotAgentTasksProvider.Name];

    public ValidateOptionsResult Validate(string? name, HandoffOptions options)
    {
        var errors = new List<string>();
        if (!string.IsNullOrWhiteSpace(options.Mode) && !HostingModes.TryParse(options.Mode, out _))
        {
            errors.Add($"Handoff:Mode must be 'Embedded', 'Dapr' or empty, not '{options.Mode}'.");
        }

        if (mode == HostingMode.Embedded && string.IsNullOrWhiteSpace(options.DataPath))
        {
            errors.Add("Handoff:DataPath must name the SQLite file of embedded mode.");
        }

        if (options.PublicBaseUrl is { Length: > 0 } publicBase
            && (!Uri.TryCreate(publicBase, UriKind.Absolute, out var publicUri) || publicUri.Scheme is not ("http" or "https")))
        {
            errors.Add("Handoff:PublicBaseUrl must be an absolute http(s) URL.");
        }

        // Upper bounds too: a timer past ~49 days cannot be set (the scheduler would stop), and a long lease only
        // delays a hand-over (its renewal timer is a third of it).
        if (options.Embedded.SchedulePollInterval <= TimeSpan.Zero || options.Embedded.SchedulePollInterval > TimeSpan.FromDays(30))
        {
            errors.Add("Handoff:Embedded:SchedulePollInterval must be positive and at most 30 days.");
        }

        if (options.Embedded.ScheduleLease < TimeSpan.FromSeconds(1) || options.Embedded.ScheduleLease > TimeSpan.FromHours(1))
        {
            errors.Add("Handoff:Embedded:ScheduleLease must be between one second and one hour.");
        }

        if (options.Embedded.MaxConcurrentWakeups is < 1 or > 1024)
        {
            errors.Add("Handoff:Embedded:MaxConcurrentWakeups must be between 1 and 1024.");
        }

        if (mode == HostingMode.Dapr && options.Dapr.ActorCallTimeout < TimeSpan.FromSeconds(1))
        {
            errors.Add("Handoff:Dapr:ActorCallTimeout must be at least one second (above the resiliency policy's actorCall timeout).");
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

        if (options.Launch.MaxParallelLaunches < 1 || options.Launch.MaxAttempts < 1 || options.Launch.RetryFactor < 1
            || options.Launch.RetryBaseDelay <= TimeSpan.Zero || options.Launch.RetryMaxDelay < options.Launch.RetryBaseDelay
            || options.Launch.InFlightTimeout <= TimeSpan.Zero || options.Launch.MaxRepositories is < 1 or > 50
            || options.Launch.PollInterval <= TimeSpan.Zero || options.Launch.PollMaxInterval < options.Launch.PollInterval
            || options.Launch.AgentMaxAge <= TimeSpan.Zero)
        {
            errors.Add("Handoff:Launch has an out-of-range value (parallelism, attempts and repositories ≥ 1, repositories ≤ 50, factor ≥ 1, delays > 0, max delay ≥ base delay, poll intervals > 0 with max ≥ first, agent max age > 0).");
        }

        foreach (var (id, integration) in options.Integrations)
        {
            var key = $"Handoff:Integrations:{id}";
            if (!long.TryParse(id, out var integrationId) || integrationId <= 0)
            {
                errors.Add($"{key}: the integration id must be a positive number.");
            }

            if (integration.Provider is null || !KnownProviders.Contains(integration.Provider))
            {
                errors.Add($"{key}:Provider must be one of: {string.Join(", ", KnownProviders)}.");
            }

            if (mode == HostingMode.Embedded)
            {
                if (string.IsNullOrWhiteSpace(integration.ApiKey))
                {
                    errors.Add($"{key}:ApiKey is required in embedded mode.");
                }

                if (!Uri.TryCreate(integration.EffectiveBaseUrl, UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https"))
                {
                    errors.Add($"{key}:BaseUrl must be an absolute http(s) URL.");
                }
            }
            else if (string.IsNullOrWhiteSpace(integration.Binding))
            {
                errors.Add($"{key}:Binding is required in Dapr mode (the output binding that holds the API key).");
            }

            if (integration.WebhookSecret is { Length: > 0 and (< 32 or > 256) })
            {
                errors.Add($"{key}:WebhookSecret must be 32 to 256 characters (what Cursor's API accepts; otherwise every launch is refused).");
            }

            // Below Polly's 10 ms floor the client cannot be built; at or past InFlightTimeout a call still
            // waiting for its answer would be taken for a lost launch and reconciled under it.
            if (integration.RequestTimeout < TimeSpan.FromMilliseconds(10) || integration.RequestTimeout >= options.Launch.InFlightTimeout)
            {
                errors.Add($"{key}:RequestTimeout must be at least 10 ms and shorter than Handoff:Launch:InFlightTimeout ({options.Launch.InFlightTimeout}).");
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

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
