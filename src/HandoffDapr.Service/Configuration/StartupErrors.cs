using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Configuration;

/// <summary>
/// Tells a bad setting (refused by validation, or a value the configuration binder cannot convert) from a fault, so
/// that start-up can stop with the settings named and no stack trace.
/// </summary>
public static class StartupErrors
{
    private const string BinderAssembly = "Microsoft.Extensions.Configuration.Binder";

    public static bool IsBadSetting(Exception exception) => exception switch
    {
        OptionsValidationException => true,
        // "Failed to convert configuration value 'abc' at 'Handoff:Launch:MaxAttempts' to type 'System.Int32'.": only
        // numbers, durations and the like fail to convert, never a string setting such as a key or secret.
        InvalidOperationException { Source: BinderAssembly } => true,
        AggregateException aggregate => aggregate.InnerExceptions.Count > 0 && aggregate.InnerExceptions.All(IsBadSetting),
        _ => false,
    };

    /// <summary>
    /// Kestrel could not listen where it was told (<c>--urls</c>, <c>ASPNETCORE_URLS</c>, <c>ASPNETCORE_HTTP_PORTS</c>,
    /// the launch profile's 5080): another process holds the address. Not a fault of the service either.
    /// </summary>
    public static bool IsAddressInUse(Exception exception) =>
        exception is IOException { InnerException: Microsoft.AspNetCore.Connections.AddressInUseException };

    /// <summary>Kestrel's own sentence names the address; what to do about it follows.</summary>
    public static string DescribeAddressInUse(Exception exception) =>
        $"Cannot listen, not starting:{Environment.NewLine}  {exception.Message} Stop what listens there, or choose another address (--urls, ASPNETCORE_URLS or ASPNETCORE_HTTP_PORTS).";

    /// <summary>One line per bad setting, under a heading.</summary>
    public static string Describe(Exception exception) =>
        "Configuration error, not starting:" + Environment.NewLine + string.Join(Environment.NewLine, Problems(exception).Select(problem => "  " + problem));

    private static IEnumerable<string> Problems(Exception exception) => exception switch
    {
        OptionsValidationException validation => validation.Failures,
        AggregateException aggregate => aggregate.InnerExceptions.SelectMany(Problems),
        _ => [exception.Message],
    };
}
