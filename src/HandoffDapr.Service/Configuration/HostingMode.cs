using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Configuration;

public enum HostingMode
{
    Embedded,
    Dapr,
}

public static partial class HostingModes
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

        return StartedBySidecar(configuration) ? HostingMode.Dapr : HostingMode.Embedded;
    }

    private static bool StartedBySidecar(IConfiguration configuration) =>
        !string.IsNullOrEmpty(configuration["APP_ID"]) || !string.IsNullOrEmpty(configuration["DAPR_HTTP_PORT"]);

    /// <summary>What <see cref="Resolve"/> went by, in words for the start-up line: the settings' names, never their values.</summary>
    public static string ChosenBy(IConfiguration configuration) =>
        !string.IsNullOrWhiteSpace(configuration[$"{HandoffOptions.SectionName}:Mode"]) ? $"set by {HandoffOptions.SectionName}:Mode"
        : StartedBySidecar(configuration) ? "detected: APP_ID or DAPR_HTTP_PORT is set"
        : "detected: neither APP_ID nor DAPR_HTTP_PORT is set";

    /// <summary>
    /// Says at start which mode runs and why, and where the runs are kept: the mode is found from the environment when not
    /// set, so an app started without the sidecar's variables ran embedded, on a data file of its own, with nothing saying so.
    /// </summary>
    public static void LogHostingMode(this WebApplication app)
    {
        var mode = app.Services.GetRequiredService<HostingContext>().Mode;
        var runStore = mode == HostingMode.Embedded
            ? Path.GetFullPath(app.Services.GetRequiredService<IOptions<HandoffOptions>>().Value.DataPath)
            : "daprd's actor state store";
        LogModeChosen(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HostingModes).FullName!), mode, ChosenBy(app.Configuration), runStore);
    }

    [LoggerMessage(EventId = 4501, EventName = "HostingModeChosen", Level = LogLevel.Information, Message = "Running in {Mode} mode ({ChosenBy}); runs are kept in {RunStore}")]
    private static partial void LogModeChosen(ILogger logger, HostingMode mode, string chosenBy, string runStore);
}

/// <summary>The mode this process runs in, as a service endpoints can ask for.</summary>
public sealed record HostingContext(HostingMode Mode);
