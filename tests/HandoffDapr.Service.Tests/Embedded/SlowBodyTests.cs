using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Embedded;

public sealed class SlowBodyTests
{
    [Fact]
    public async Task Body_that_arrives_too_slowly_is_a_408_problem_not_a_400_bad_framing()
    {
        // Announces 1000 bytes, sends 10, then stalls.
        var text = await AnswerToStalledBodyAsync("POST /runs/1/handoff HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"group_id");

        Assert.True(text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), text);
    }

    /// <summary>
    /// A body refused for its declared length is read and dropped before the 413 is sent; a client that then stalls (or
    /// is cut off) mid-body still gets that 413 problem: not the exception handler's answer to the failed read.
    /// </summary>
    [Fact]
    public async Task Body_declared_over_the_limit_that_then_arrives_too_slowly_is_still_a_413_problem()
    {
        // Announces 2 MiB (over the default 1 MiB limit), sends 10 bytes, then stalls.
        var text = await AnswerToStalledBodyAsync($"POST /runs/1/handoff HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n{{\"group_id");

        Assert.True(text.StartsWith("HTTP/1.1 413", StringComparison.Ordinal), text);
        Assert.Contains("/problems/body-too-large", text, StringComparison.Ordinal);
    }

    /// <summary>
    /// Sends <paramref name="request"/> (a head and the start of a body) over a raw socket to the service on Kestrel, then
    /// stalls; returns all the service answered before it closed the connection.
    /// </summary>
    private static async Task<string> AnswerToStalledBodyAsync(string request)
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var baseFactory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url);
        // Kestrel's minimum body data rate (default 240 B/s after 5 s), with a shorter grace so the test is quick.
        using var factory = baseFactory.WithWebHostBuilder(builder => builder.ConfigureServices(services =>
            services.PostConfigure<KestrelServerOptions>(kestrel => kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(240, TimeSpan.FromSeconds(2)))));
        var port = factory.StartOnKestrel().Port;

        return await HttpExtensions.SendRawAsync(port, request);
    }
}
