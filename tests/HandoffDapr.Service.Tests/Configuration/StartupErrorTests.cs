using System.Diagnostics;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

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
    // OpenTelemetry ignored an endpoint without a scheme without a word: nothing was exported.
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "OTEL_EXPORTER_OTLP_ENDPOINT must be an absolute http(s) URL")]
    // A bare number is days to .NET: a poll meant every 30 seconds came once a month.
    [InlineData("Handoff__Launch__PollInterval", "30", "Handoff:Launch:PollInterval is '30', which would be read as days")]
    public async Task Bad_setting_stops_start_up_naming_the_setting_without_a_stack_trace(string variable, string value, string expected)
    {
        var (exitCode, stdout, stderr) = await RunServiceAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = temp.File("handoff.db"),
            ["Handoff__Integrations__42__ApiKey"] = "key",
            ["Handoff__Integrations__43__ApiKey"] = "key",
            // The host's own log of a failed start carries the exception: only what the operator reads on stderr is judged.
            ["Logging__LogLevel__Default"] = "None",
            ["DOTNET_DbgEnableMiniDump"] = "0",
            [variable] = value,
        });

        var output = stdout + stderr;
        Assert.Contains(expected, output);
        Assert.StartsWith("Configuration error, not starting:", stderr.TrimStart());
        Assert.DoesNotContain("Unhandled exception", output);
        Assert.DoesNotContain("   at ", output);
        Assert.Equal(1, exitCode);
    }

    /// <summary>
    /// A data path the service cannot use: a folder it cannot make, a file that is not a database, another application's
    /// database (its own <c>runs</c> table), or a damaged one. A setting to fix, named on one line without a stack trace,
    /// with the log at its defaults as an operator starts it: another application's database used to end in an unhandled
    /// exception (exit code 134), and every such path in the host's failed start ("Hosting failed to start"), which wrote
    /// the exception with its stack trace to the console above that line.
    /// </summary>
    [Theory]
    [InlineData("missing-folder")]
    [InlineData("not-a-database")]
    [InlineData("other-application")]
    [InlineData("damaged")]
    public async Task Unusable_data_path_stops_start_up_naming_the_setting_without_a_stack_trace(string kind)
    {
        var dataPath = kind == "missing-folder" ? "/proc/no-such-folder/handoff.db" : temp.File($"{kind}.db");
        if (kind == "not-a-database")
        {
            await File.WriteAllTextAsync(dataPath, "not a database, but some text long enough to fill a header of one hundred bytes or so, and more");
        }
        else if (kind is "other-application" or "damaged")
        {
            using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={dataPath};Pooling=False"))
            {
                connection.Open();
                using var command = connection.CreateCommand();
                command.CommandText = "CREATE TABLE runs (name TEXT); INSERT INTO runs VALUES ('not ours');";
                command.ExecuteNonQuery();
            }

            if (kind == "damaged")
            {
                // The first page's b-tree header (after the 100-byte file header) overwritten: the schema cannot be read.
                await using var file = new FileStream(dataPath, FileMode.Open, FileAccess.Write);
                file.Seek(100, SeekOrigin.Begin);
                file.Write(Enumerable.Repeat((byte)0xFF, 200).ToArray());
            }
        }

        var (exitCode, stdout, stderr) = await RunServiceAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = dataPath,
            ["Handoff__Integrations__42__ApiKey"] = "key",
            ["Handoff__Integrations__43__ApiKey"] = "key",
            ["DOTNET_DbgEnableMiniDump"] = "0",
        });

        var output = stdout + stderr;
        Assert.Contains($"Handoff:DataPath '{dataPath}' cannot be used", stderr);
        Assert.StartsWith("Configuration error, not starting:", stderr.TrimStart());
        Assert.DoesNotContain("Hosting failed to start", output);
        Assert.DoesNotContain("Unhandled exception", output);
        Assert.DoesNotContain("   at ", output);
        Assert.Equal(1, exitCode);
    }

    /// <summary>
    /// The address to listen on is taken (a second <c>dotnet run</c>, the quick start's service still in the
    /// background): Kestrel's bind failure used to end the process as an unhandled exception, stack trace and exit code
    /// 134 (an abort, a crash dump where enabled). It is the listening address to change or free, said as such.
    /// </summary>
    [Fact]
    public async Task Address_already_in_use_stops_start_up_naming_the_address_without_a_stack_trace()
    {
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        var address = $"http://127.0.0.1:{((System.Net.IPEndPoint)taken.LocalEndpoint).Port}";

        var (exitCode, stdout, stderr) = await RunServiceAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = temp.File("handoff.db"),
            ["Handoff__Integrations__42__ApiKey"] = "key",
            ["Handoff__Integrations__43__ApiKey"] = "key",
            ["Logging__LogLevel__Default"] = "None",
            ["DOTNET_DbgEnableMiniDump"] = "0",
            ["ASPNETCORE_URLS"] = address,
        });

        var output = stdout + stderr;
        Assert.Contains(address, stderr);
        Assert.Contains("already in use", stderr);
        Assert.DoesNotContain("Unhandled exception", output);
        Assert.DoesNotContain("   at ", output);
        Assert.Equal(1, exitCode);
    }

    /// <param name="wait">
    /// A wait that ends before the server has started (1 ms; or 1 s on a loaded machine) stops the app during its start:
    /// that used to end in an unhandled TaskCanceledException, exit code 134.
    /// </param>
    [Theory]
    [InlineData("00:00:01")]
    [InlineData("00:00:00.001")]
    public async Task Dapr_mode_that_finds_no_sidecar_stops_with_a_failing_exit_code(string wait)
    {
        var (exitCode, stdout, stderr) = await RunServiceAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Dapr",
            ["Handoff__Dapr__SidecarWaitTimeout"] = wait,
            ["DOTNET_DbgEnableMiniDump"] = "0",
            // A port nothing listens on: no sidecar answers.
            ["DAPR_HTTP_ENDPOINT"] = "http://127.0.0.1:1",
            ["DAPR_GRPC_ENDPOINT"] = "http://127.0.0.1:1",
        });

        // An orchestrator restarts a container that failed; one that exited 0 it may leave stopped.
        Assert.Equal(1, exitCode);
        Assert.DoesNotContain("Unhandled exception", stdout + stderr);
    }

    [Fact]
    public void An_invalid_operation_that_is_not_the_binders_is_a_fault_not_a_bad_setting()
    {
        // Only the binder's "cannot convert" names a setting; any other InvalidOperationException at start is a bug, whose
        // stack trace must not be swallowed under "Configuration error".
        var unconvertible = Assert.Throws<InvalidOperationException>(() => new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["Handoff:Launch:MaxAttempts"] = "abc" }).Build()
            .GetSection(HandoffOptions.SectionName).Get<HandoffOptions>());
        var fault = Assert.Throws<InvalidOperationException>(() => Array.Empty<int>().First());

        Assert.True(StartupErrors.IsBadSetting(unconvertible));
        Assert.False(StartupErrors.IsBadSetting(fault));
    }

    [Fact]
    public void An_aggregate_is_a_bad_setting_only_when_each_of_its_exceptions_is()
    {
        // Options validated at start come as one aggregate: a fault among them must keep its stack trace.
        var badSetting = new OptionsValidationException(HandoffOptions.SectionName, typeof(HandoffOptions), ["Handoff:Launch:MaxAttempts must be at least 1."]);
        var fault = Assert.Throws<InvalidOperationException>(() => Array.Empty<int>().First());

        Assert.True(StartupErrors.IsBadSetting(new AggregateException(badSetting, badSetting)));
        Assert.False(StartupErrors.IsBadSetting(new AggregateException(badSetting, fault)));
    }

    [Fact]
    public void An_empty_aggregate_is_not_taken_for_a_bad_setting()
    {
        // It names no setting: "Configuration error" with nothing under it would tell the operator nothing.
        Assert.False(StartupErrors.IsBadSetting(new AggregateException()));
    }

    [Fact]
    public void Each_bad_setting_of_an_aggregate_is_described_on_its_own_line()
    {
        var first = new OptionsValidationException(HandoffOptions.SectionName, typeof(HandoffOptions), ["Handoff:Launch:MaxAttempts must be at least 1.", "Handoff:Launch:MaxRepositories must be between 1 and 50."]);
        var second = new OptionsValidationException("OTEL_EXPORTER_OTLP_ENDPOINT", typeof(string), ["OTEL_EXPORTER_OTLP_ENDPOINT must be an absolute http(s) URL."]);

        var lines = StartupErrors.Describe(new AggregateException(first, second)).Split(Environment.NewLine);

        // The heading, then one indented line per failure: not the aggregate's own one-line "One or more errors occurred".
        Assert.Equal(4, lines.Length);
        Assert.All(lines.Skip(1), line => Assert.StartsWith("  ", line));
        Assert.Equal(first.Failures.Concat(second.Failures), lines.Skip(1).Select(line => line.Trim()));
    }

    [Fact]
    public void Only_a_taken_address_is_described_as_one()
    {
        // Another I/O failure at start (a missing file) is not the listening address's fault: not "Cannot listen".
        var missing = Assert.ThrowsAny<IOException>(() => File.OpenRead(temp.File("missing.pem")));

        Assert.False(StartupErrors.IsAddressInUse(missing));
        Assert.False(StartupErrors.IsAddressInUse(new IOException("Failed to bind to address http://127.0.0.1:80.", new UnauthorizedAccessException())));
    }

    /// <summary>Starts the built service as an operator does (Production, loopback) with these settings and waits for it to exit.</summary>
    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunServiceAsync(IDictionary<string, string> environment)
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
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

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

        return (process.ExitCode, await stdout, await stderr);
    }

    public void Dispose() => temp.Dispose();
}
