using System.Net;
using System.Net.Sockets;
using HandoffDapr.Service.DaprHost;
using Microsoft.Extensions.Configuration;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd's enabled features as readiness reads them (<c>GET v1.0/metadata</c>'s <c>enabledFeatures</c>): a field left out
/// is no feature (daprd's omitempty), and an answer that cannot be read concludes nothing (null), so that it cannot
/// keep the app out of traffic on its own.
/// </summary>
public sealed class SidecarFeaturesTests
{
    [Theory]
    [InlineData(200, """{"id":"handoff","enabledFeatures":["ActorStateTTL","SchedulerReminders"]}""", "ActorStateTTL,SchedulerReminders")]
    [InlineData(200, """{"id":"handoff"}""", "")]
    [InlineData(200, """{"id":"handoff","enabledFeatures":[]}""", "")]
    [InlineData(200, """{"id":"handoff","enabledFeatures":["ActorStateTTL",7,null,{"name":"SchedulerReminders"}]}""", "ActorStateTTL")]
    [InlineData(200, """{"enabledFeatures":"ActorStateTTL"}""", null)]
    [InlineData(200, """["ActorStateTTL"]""", null)]
    [InlineData(200, "not json", null)]
    [InlineData(500, """{"enabledFeatures":["ActorStateTTL"]}""", null)]
    [InlineData(401, """{"errorCode":"ERR_API_TOKEN","message":"invalid api token"}""", null)]
    public async Task Enabled_features_are_read_from_daprds_metadata_and_an_answer_that_cannot_be_read_concludes_nothing(int status, string body, string? expected)
    {
        using var daprd = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        daprd.Given(Request.Create().WithPath("/v1.0/metadata").UsingGet().WithHeader("dapr-api-token", "daprd-token-7"))
            .RespondWith(Response.Create().WithStatusCode(status).WithHeader("Content-Type", "application/json").WithBody(body));
        using var features = new SidecarFeatures(Configuration(daprd.Url!, "daprd-token-7"));

        var read = await features.ReadAsync(CancellationToken.None);

        Assert.Equal(expected, read is null ? null : string.Join(",", read));
    }

    [Fact]
    public async Task A_daprd_that_does_not_answer_concludes_nothing()
    {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        using var features = new SidecarFeatures(Configuration("http://127.0.0.1:9", token: null));

        Assert.Null(await features.ReadAsync(CancellationToken.None));
    }

    /// <summary>
    /// A daprd that takes the call and never answers is given up on after the client's own time-out (10 s), as one that
    /// could not be had: null, concluding nothing. Not caught, the time-out's cancellation ended the readiness check as a
    /// probe that goes away does, with no verdict or line of its own (the health check service logging the exception).
    /// </summary>
    [Fact]
    public async Task A_daprd_that_never_answers_is_given_up_on_and_concludes_nothing()
    {
        using var daprd = new TcpListener(IPAddress.Loopback, 0);
        daprd.Start();
        using var features = new SidecarFeatures(Configuration($"http://127.0.0.1:{((IPEndPoint)daprd.LocalEndpoint).Port}", token: null));

        var reading = features.ReadAsync(CancellationToken.None);
        using var call = await daprd.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30)); // accepted, never answered

        Assert.Null(await reading.WaitAsync(TimeSpan.FromSeconds(60)));
    }

    /// <summary>
    /// The caller going away (the readiness probe's cancellation) while daprd is asked is no answer that could not be
    /// had: it ends cancelled, so that the probe concludes nothing. Taken as "features unknown", the probe went on to a
    /// verdict (and its line) of its own.
    /// </summary>
    [Fact]
    public async Task A_caller_that_goes_away_while_daprd_is_asked_ends_cancelled_not_with_features_unknown()
    {
        using var daprd = new TcpListener(IPAddress.Loopback, 0);
        daprd.Start();
        using var features = new SidecarFeatures(Configuration($"http://127.0.0.1:{((IPEndPoint)daprd.LocalEndpoint).Port}", token: null));
        using var caller = new CancellationTokenSource();

        var reading = features.ReadAsync(caller.Token);
        using var call = await daprd.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30)); // accepted, never answered
        await caller.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    private static IConfiguration Configuration(string endpoint, string? token) =>
        new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["DAPR_HTTP_ENDPOINT"] = endpoint,
            ["DAPR_API_TOKEN"] = token,
        }).Build();
}
