using System.Net;
using System.Net.Sockets;
using System.Text;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Embedded;

public sealed class SlowBodyTests
{
    [Fact]
    public async Task Body_that_arrives_too_slowly_is_a_408_problem_not_a_400_bad_framing()
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var baseFactory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url);
        // Kestrel's minimum body data rate (default 240 B/s after 5 s), with a shorter grace so the test is quick.
        using var factory = baseFactory.WithWebHostBuilder(builder => builder.ConfigureServices(services =>
            services.PostConfigure<KestrelServerOptions>(kestrel => kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(240, TimeSpan.FromSeconds(2)))));
        factory.UseKestrel(0);
        factory.StartServer();
        var port = new Uri(factory.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var socket = new TcpClient();
        await socket.ConnectAsync(IPAddress.Loopback, port, timeout.Token);
        var stream = socket.GetStream();
        // Announces 1000 bytes, sends 10, then stalls.
        await stream.WriteAsync(Encoding.ASCII.GetBytes("POST /runs/1/handoff HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"group_id"), timeout.Token);
        using var response = new MemoryStream();
        try
        {
            await stream.CopyToAsync(response, timeout.Token);
        }
        catch (IOException)
        {
        }

        var text = Encoding.UTF8.GetString(response.ToArray());
        Assert.True(text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), text);
    }
}
