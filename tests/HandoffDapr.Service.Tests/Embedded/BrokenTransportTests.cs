using System.Net;
using System.Net.Sockets;
using System.Text;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Bodies that break HTTP itself (bad chunk framing, a body over Kestrel's own limit). Only a real Kestrel socket
/// produces these errors, so the service runs on a loopback port and the requests are written by hand.
/// </summary>
public sealed class BrokenTransportTests : IClassFixture<BrokenTransportTests.Service>
{
    private const int BodyLimit = 64 * 1024;
    private readonly Service service;

    public BrokenTransportTests(Service service) => this.service = service;

    public static TheoryData<string> BodyRoutes => new()
    {
        "/runs/1/handoff",
        "/events/autofix-run-completed",
        $"/webhooks/cursor/{EmbeddedServiceFactory.IntegrationId}?run_id=1",
    };

    [Theory]
    [MemberData(nameof(BodyRoutes))]
    public async Task Chunk_with_a_size_that_is_not_hex_is_a_400_problem(string path)
    {
        var (status, head, body) = await service.SendRawAsync(
            $"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n");

        Assert.Equal(400, status);
        Assert.Contains("application/problem+json", head, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Exception", body);
    }

    [Theory]
    [MemberData(nameof(BodyRoutes))]
    public async Task Chunk_with_a_size_too_large_for_a_number_is_a_400_problem(string path)
    {
        // Kestrel reports this one as an IOException (its size overflowed while parsing), not as a bad request.
        foreach (var size in new[] { "80000000", "ffffffffffffffffff" })
        {
            var (status, head, body) = await service.SendRawAsync(
                $"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{size}\r\n{{}}\r\n0\r\n\r\n");

            Assert.True(status == 400, $"chunk size {size}: {status}\n{head}\n{body}");
            Assert.Contains("application/problem+json", head, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("Exception", body);
        }
    }

    [Theory]
    [MemberData(nameof(BodyRoutes))]
    public async Task Chunked_body_over_the_configured_limit_is_a_413_problem(string path)
    {
        // Chunked, so no Content-Length warns in advance: the limit is found while reading.
        var chunk = new string(' ', 16 * 1024);
        var request = new StringBuilder($"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for (var sent = 0; sent <= BodyLimit; sent += chunk.Length)
        {
            request.Append($"{chunk.Length:x}\r\n{chunk}\r\n");
        }

        request.Append("0\r\n\r\n");

        var (status, head, body) = await service.SendRawAsync(request.ToString());

        Assert.Equal(413, status);
        Assert.Contains("application/problem+json", head, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Exception", body);
        // The limit the caller can send, on the webhook too: its own 256 KiB cap is above Handoff:MaxRequestBodyBytes here.
        Assert.Contains($"The body may be at most {BodyLimit} bytes.", body, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(BodyRoutes))]
    public async Task Body_declared_over_the_limit_gets_its_413_though_the_client_is_still_sending(string path)
    {
        // Answered from the Content-Length alone, the rest of the body used to be left unread: Kestrel then closed the
        // connection on it, and the reset could reach the client before the answer did (an error, not a 413; to daprd a
        // failure to retry, not the DROP that sends the event to its dead letter).
        var body = new byte[BodyLimit * 16];
        Array.Fill(body, (byte)' ');
        for (var attempt = 0; attempt < 10; attempt++)
        {
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            using var response = await service.Client.PostAsync(path, content);

            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        }
    }

    [Fact]
    public async Task Body_declared_over_the_limit_of_a_client_awaiting_100_continue_is_refused_without_asking_for_it()
    {
        // Reading the body would send "100 Continue" and make the client upload what is refused anyway.
        var (status, head, _) = await service.SendRawAsync(
            $"POST /events/autofix-run-completed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {BodyLimit * 16}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");

        Assert.Equal(413, status);
        Assert.DoesNotContain("100 Continue", head);
    }

    /// <summary>
    /// The webhook's 256 KiB cap is under Kestrel's own limit (1 MiB by default), so only the declared length says in
    /// advance that the body is too large: a client awaiting "100 Continue" is refused at once, not asked to upload it.
    /// </summary>
    [Fact]
    public async Task Webhook_body_declared_over_its_256_KiB_cap_of_a_client_awaiting_100_continue_is_refused_without_asking_for_it()
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:WebhookSecret"] = "webhook-secret-0123456789abcdef-0123456789",
        });
        var port = factory.StartOnKestrel().Port;

        // Declares one byte over the cap, and sends none of it.
        var answer = await HttpExtensions.SendRawAsync(port,
            $"POST /webhooks/cursor/{EmbeddedServiceFactory.IntegrationId}?run_id=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {(256 * 1024) + 1}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");

        Assert.True(answer.StartsWith("HTTP/1.1 413", StringComparison.Ordinal), answer);
        Assert.DoesNotContain("100 Continue", answer);
        Assert.Contains("The body may be at most 262144 bytes.", answer, StringComparison.Ordinal);
    }

    /// <summary>
    /// A body refused for its declared length is read and dropped only up to 16 MiB (daprd sends up to 8): one declared
    /// larger is answered at once, unread. Without that bound the service would read whatever a client declares (gigabytes)
    /// only to drop it; with Kestrel's minimum data rate off, as here, it would wait for ever on a client that sends none.
    /// </summary>
    [Fact]
    public async Task Body_declared_over_16_MiB_is_refused_with_413_without_being_read()
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var baseFactory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url);
        using var factory = baseFactory.WithWebHostBuilder(builder => builder.ConfigureServices(services =>
            services.PostConfigure<KestrelServerOptions>(kestrel => kestrel.Limits.MinRequestBodyDataRate = null)));
        var port = factory.StartOnKestrel().Port;

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var socket = new TcpClient();
        await socket.ConnectAsync(IPAddress.Loopback, port, timeout.Token);
        var stream = socket.GetStream();
        // Declares one byte more than the bound, and sends none of it.
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /runs/1/handoff HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {(16 * 1024 * 1024) + 1}\r\n\r\n"), timeout.Token);
        var head = new StringBuilder();
        var buffer = new byte[4096];
        while (!head.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            Assert.True(read > 0, $"connection closed before an answer: {head}");
            head.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }

        Assert.StartsWith("HTTP/1.1 413", head.ToString(), StringComparison.Ordinal);
    }

    public sealed class Service : IDisposable
    {
        private readonly TempDirectory temp = new();
        private readonly FakeCursor cursor = new();
        private readonly EmbeddedServiceFactory factory;
        private readonly int port;

        public Service()
        {
            var settings = new Dictionary<string, string?>
            {
                ["Handoff:MaxRequestBodyBytes"] = BodyLimit.ToString(),
                [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:WebhookSecret"] = "webhook-secret-0123456789abcdef-0123456789",
            };
            factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, settings: settings);
            port = factory.StartOnKestrel().Port;
            Client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(20) };
        }

        /// <summary>A client on the service's loopback port (HttpClient's own framing, as a real caller's).</summary>
        public HttpClient Client { get; }

        /// <summary>Writes <paramref name="request"/> as is and reads the whole response (the request asks the server to close).</summary>
        public async Task<(int Status, string Head, string Body)> SendRawAsync(string request)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            using var socket = new TcpClient();
            await socket.ConnectAsync(IPAddress.Loopback, port, timeout.Token);
            var stream = socket.GetStream();
            try
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes(request), timeout.Token);
            }
            catch (IOException)
            {
                // The server may answer and close before it has read everything we send; the answer is what counts.
            }

            using var response = new MemoryStream();
            await stream.CopyToAsync(response, timeout.Token);
            var text = Encoding.UTF8.GetString(response.ToArray());
            var split = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            var head = split < 0 ? text : text[..split];
            var status = int.Parse(head.Split(' ')[1]);
            return (status, head, split < 0 ? string.Empty : text[(split + 4)..]);
        }

        public void Dispose()
        {
            Client.Dispose();
            factory.Dispose();
            cursor.Dispose();
            temp.Dispose();
        }
    }
}
