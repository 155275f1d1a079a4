using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// What docs/api.md says of the answers Kestrel gives before a request reaches the app: a status, no body (no problem
/// details, no type), as the app's status-code pages never see them. The test server does not run Kestrel's parser, so
/// these go to a real Kestrel on loopback over a raw socket.
/// </summary>
public sealed class ServerRefusalTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly int port;

    public ServerRefusalTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url);
        port = factory.StartOnKestrel().Port;
    }

    public static TheoryData<string, string> RefusedBeforeTheApp => new()
    {
        { "GET /runs/1%00/handoff HTTP/1.1\r\nHost: localhost\r\n\r\n", "400" },
        { "GET /runs/1/handoff HTTP/1.1\r\nHost: local host\r\n\r\n", "400" },
        { $"GET /runs HTTP/1.1\r\nHost: localhost\r\nX-Big: {new string('a', 40 * 1024)}\r\n\r\n", "431" },
        { $"GET /runs?limit=1&q={new string('a', 10 * 1024)} HTTP/1.1\r\nHost: localhost\r\n\r\n", "414" },
    };

    [Theory]
    [MemberData(nameof(RefusedBeforeTheApp))]
    public async Task Request_kestrel_refuses_before_the_app_is_answered_with_a_status_and_no_body(string request, string status)
    {
        var answer = await HttpExtensions.SendRawAsync(port, request);

        Assert.StartsWith($"HTTP/1.1 {status} ", answer, StringComparison.Ordinal);
        Assert.Contains("Content-Length: 0\r\n", answer, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith("\r\n\r\n", answer, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
