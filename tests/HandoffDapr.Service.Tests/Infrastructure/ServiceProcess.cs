using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>The built service as a real process on a loopback port, for tests that need a real socket (a browser).</summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly Process process;
    private readonly StringBuilder output = new();

    private ServiceProcess(Process process, Uri address)
    {
        this.process = process;
        Address = address;
        process.OutputDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        process.ErrorDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Uri Address { get; }

    public string Output
    {
        get
        {
            lock (output)
            {
                return output.ToString();
            }
        }
    }

    /// <summary>
    /// Starts the service on a free loopback port and waits until it is healthy. The port is free when chosen, but another
    /// connection of the test run may take it as its own ephemeral port before the service binds it: a start that fails
    /// only for that is made again on another port, at most three times.
    /// </summary>
    public static Task<ServiceProcess> StartAsync(IDictionary<string, string> environment) =>
        StartAsync(_ => environment);

    /// <summary>As above, with settings that name the service's own address (a public base URL for webhooks).</summary>
    public static async Task<ServiceProcess> StartAsync(Func<Uri, IDictionary<string, string>> environmentAt)
    {
        for (var attempt = 1; ; attempt++)
        {
            var (service, failure) = await TryStartAsync(environmentAt);
            if (service is not null)
            {
                return service;
            }

            if (attempt == 3 || !failure.Contains("address already in use", StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"The service did not become healthy:\n{failure}");
            }
        }
    }

    private static async Task<(ServiceProcess? Service, string Failure)> TryStartAsync(Func<Uri, IDictionary<string, string>> environmentAt)
    {
        var port = FreePort();
        var address = new Uri($"http://127.0.0.1:{port}");
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        var dll = Path.Combine(AppContext.BaseDirectory, "HandoffDapr.Service.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { dll, "--contentRoot", Path.Combine(root, "src", "HandoffDapr.Service") },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["ASPNETCORE_URLS"] = address.GetLeftPart(UriPartial.Authority);
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        foreach (var (key, value) in environmentAt(address))
        {
            start.Environment[key] = value;
        }

        var service = new ServiceProcess(Process.Start(start)!, address);
        using var client = new HttpClient { BaseAddress = service.Address, Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                if ((await client.GetAsync("/healthz")).IsSuccessStatusCode)
                {
                    return (service, "");
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
                // The probe's own 2 s ran out: on a loaded machine a cold start can take longer than that to answer its first
                // request once the port is open. Probed again until the deadline, as a refused connection is.
            }

            if (DateTime.UtcNow > deadline || service.process.HasExited)
            {
                await service.DisposeAsync();
                // Read once it has exited: what it wrote last (why it could not start) is all in.
                return (null, service.Output);
            }

            await Task.Delay(100);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }

        process.Dispose();
    }
}
