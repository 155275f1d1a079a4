using System.Net;
using System.Net.Sockets;
using System.Text;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Transport;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>RequestTimeout bounds "one provider call": a provider that sends its headers and then stalls the body must time out too.</summary>
public sealed class ProviderBodyTimeoutTests
{
    [Fact]
    public async Task Provider_that_stalls_after_its_headers_is_timed_out_by_the_request_timeout()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var stop = new CancellationTokenSource();
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync(stop.Token);
            var buffer = new byte[8192];
            await socket.ReceiveAsync(buffer, SocketFlags.None, stop.Token);
            // Headers promise 100 bytes, then nothing comes (a stalled provider or proxy).
            await socket.SendAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"), SocketFlags.None, stop.Token);
            try { await Task.Delay(Timeout.Infinite, stop.Token); } catch (OperationCanceledException) { }
        });

        using var clients = new ProviderHttpClients(TimeProvider.System);
        var transport = new HttpProviderTransport(clients.Create(new IntegrationOptions
        {
            BaseUrl = $"http://127.0.0.1:{port}",
            ApiKey = "key",
            RequestTimeout = TimeSpan.FromMilliseconds(500),
        }));

        // The caller's own token only stops the test from hanging (it would end in a TaskCanceledException): the
        // transport must give up first, as a timeout.
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var failure = await Record.ExceptionAsync(() => transport.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/stop"), guard.Token));
        stop.Cancel();

        var timedOut = Assert.IsType<ProviderTransportException>(failure);
        Assert.Equal(TransportFailureKind.Timeout, timedOut.Kind);
        // The provider answered, so it had the request: a launch timed out this way is reconciled, not launched again.
        Assert.True(timedOut.RequestSent);
    }
}
