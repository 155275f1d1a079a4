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

/// <summary>Visible to <c>WebApplicationFactory</c> in the tests.</summary>
public partial class Program;
