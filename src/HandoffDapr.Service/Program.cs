using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Extensions;

try
{
    var builder = WebApplication.CreateBuilder(args);
    builder.AddHandoffServices();

    var app = builder.Build();
    app.MapHandoff();
    app.Run();
    return Environment.ExitCode; // 0 unless a start-up check stopped the app (no sidecar)
}
catch (Exception exception) when (StartupErrors.IsBadSetting(exception))
{
    // An operator's mistake, not a bug: the setting and what is wrong with it, without a stack trace.
    Console.Error.WriteLine(StartupErrors.Describe(exception));
    return 1;
}
catch (IOException exception) when (StartupErrors.IsAddressInUse(exception))
{
    // Another process listens there (a second `dotnet run`): say which address, not an unhandled exception (exit 134).
    Console.Error.WriteLine(StartupErrors.DescribeAddressInUse(exception));
    return 1;
}
catch (OperationCanceledException) when (Environment.ExitCode != 0)
{
    // A start-up check (no sidecar: SidecarMissing, logged) stopped the app while the server was still starting, which
    // cancels the start: that stop, with its exit code, not an unhandled exception (exit 134).
    return Environment.ExitCode;
}

/// <summary>Visible to <c>WebApplicationFactory</c> in the tests.</summary>
public partial class Program;
