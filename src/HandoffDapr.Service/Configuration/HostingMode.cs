using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Configuration;

public enum HostingMode
{
    Embedded,
    Dapr,
}

public static class HostingModes
{
    /// <summary>A mode by its name only: <see cref="Enum.TryParse{TEnum}(string, bool, out TEnum)"/> would also take "1" or "Embedded,Dapr".</summary>
    public static bool TryParse(string? value, out HostingMode mode)
    {
        foreach (var known in Enum.GetValues<HostingMode>())
        {
            if (string.Equals(value?.Trim(), known.ToString(), StringComparison.OrdinalIgnoreCase))
            {
                mode = known;
                return true;
            }
        }

        mode = default;
        return false;
    }

    /// <summary>What start-up says of a <c>Handoff:Mode</c> it cannot use, wherever it is found.</summary>
    public static string InvalidModeMessage(string configured) => $"Handoff:Mode must be 'Embedded', 'Dapr' or empty, not '{configured}'.";

    /// <summary>
    /// The explicit <c>Handoff:Mode</c> wins; otherwise Dapr mode when a sidecar started us
    /// (<c>dapr run</c> sets <c>APP_ID</c> and <c>DAPR_HTTP_PORT</c>), else embedded mode.
    /// </summary>
    public static HostingMode Resolve(IConfiguration configuration)
    {
        var configured = configuration[$"{HandoffOptions.SectionName}:Mode"];
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return TryParse(configured, out var explicitMode)
                ? explicitMode
                : throw new OptionsValidationException(
                    HandoffOptions.SectionName, typeof(HandoffOptions), [InvalidModeMessage(configured)]);
        }

        var startedBySidecar = !string.IsNullOrEmpty(configuration["APP_ID"]) || !string.IsNullOrEmpty(configuration["DAPR_HTTP_PORT"]);
        return startedBySidecar ? HostingMode.Dapr : HostingMode.Embedded;
    }
}

/// <summary>The mode this process runs in, as a service endpoints can ask for.</summary>
public sealed record HostingContext(HostingMode Mode);
