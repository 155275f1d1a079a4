using System.Diagnostics;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Configuration;

/// <summary>The built service, started as an operator starts it, with one bad setting: it must say which and stop.</summary>
public sealed class StartupErrorTests : IDisposable
{
    private readonly TempDirectory temp = new();

    [Theory]
    [InlineData("Handoff__MaxRequestBodyBytes", "0", "Handoff:MaxRequestBodyBytes must be between")]
    [InlineData("Handoff__Mode", "bogus", "Handoff:Mode must be")]
    [InlineData("Handoff__Launch__MaxAttempts", "abc", "'Handoff:Launch:MaxAttempts'")]
    [InlineData("Handoff__Launch__RetryBaseDelay", "30s", "'Handoff:Launch:RetryBaseDelay'")]
    [InlineData("Handoff__DataPath", "/proc/no-such-folder/handoff.db", "Handoff:DataPath '/proc/no-such-folder/handoff.db' cannot be used")]
    // An integration's setting the binder cannot convert used to drop the whole integration silently.
    [InlineData("Handoff__Integrations__42__RequestTimeout", "1e3", "'Handoff:Integrations:42:RequestTimeout'")]
    // A key with a line break used to fail building its HTTP client, with a stack trace.
    [InlineData("Handoff__Integrations__42__ApiKey", "key\nmore", "Handoff:Integrations:42:ApiKey must be printable ASCII")]
    public async Task Bad_setting_stops_start_up_naming_the_setting_without_a_stack_trace(string variable, string value, string expected)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "HandoffDapr.Service.dll") },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["ASPNETCORE_URLS"] = "http://127.0.0.1:0";
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        start.Environment["Handoff__Mode"] = "Embedded";
        start.Environment["Handoff__DataPath"] = temp.File("handoff.db");
        start.Environment["Handoff__Integrations__42__ApiKey"] = "key";
        start.Environment["Handoff__Integrations__43__ApiKey"] = "key";
        // The host's own log of a failed start carries the exception: only what the operator reads on stderr is judged.
        start.Environment["Logging__LogLevel__Default"] = "None";
        start.Environment["DOTNET_DbgEnableMiniDump"] = "0";
        start.Environment[variable] = value;

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        var output = await stdout + await stderr;
        Assert.Contains(expected, output);
        Assert.StartsWith("Configuration error, not starting:", (await stderr).TrimStart());
        Assert.DoesNotContain("Unhandled exception", output);
        Assert.DoesNotContain("   at ", output);
        Assert.Equal(1, process.ExitCode);
    }

    [Fact]
    public async Task Dapr_mode_that_finds_no_sidecar_stops_with_a_failing_exit_code()
    {
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "HandoffDapr.Service.dll") },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["ASPNETCORE_URLS"] = "http://127.0.0.1:0";
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        start.Environment["Handoff__Mode"] = "Dapr";
        start.Environment["Handoff__Dapr__SidecarWaitTimeout"] = "00:00:01";
        // A port nothing listens on: no sidecar answers.
        start.Environment["DAPR_HTTP_ENDPOINT"] = "http://127.0.0.1:1";
        start.Environment["DAPR_GRPC_ENDPOINT"] = "http://127.0.0.1:1";

        using var process = Process.Start(start)!;
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        // An orchestrator restarts a container that failed; one that exited 0 it may leave stopped.
        Assert.Equal(1, process.ExitCode);
    }

    public void Dispose() => temp.Dispose();
}
