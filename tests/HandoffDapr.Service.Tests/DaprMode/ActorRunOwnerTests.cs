using System.Net;
using Dapr.Actors.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Hosting.Internal;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>The API's way to a run's actor: whatever the sidecar answers, the endpoints see "unavailable" or a result.</summary>
public sealed class ActorRunOwnerTests
{
    [Theory]
    [InlineData(HttpStatusCode.Unauthorized)]
    [InlineData(HttpStatusCode.Forbidden)]
    public async Task Sidecar_refusing_the_actor_call_is_unavailable_not_an_unhandled_exception(HttpStatusCode status)
    {
        // A wrong or rotated dapr-api-token: the SDK throws AuthenticationException, which is no DaprException.
        var proxies = new ActorProxyFactory(
            new ActorProxyOptions { HttpEndpoint = "http://127.0.0.1:3500", UseJsonSerialization = true, JsonSerializerOptions = HandoffJsonContext.CreateOptions() },
            new Answer(status));
        var options = Options.Create(new HandoffOptions());
        var engine = new HandoffEngine(new NoIntegrations(), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), TimeProvider.System, NullLogger<HandoffEngine>.Instance);
        var owner = new ActorRunOwner(
            proxies, options, engine, new RequestDrain(options, new HandoffDapr.Service.Configuration.HostingContext(HandoffDapr.Service.Configuration.HostingMode.Dapr), TimeProvider.System, NullLogger<RequestDrain>.Instance),
            new ProviderCallCutoff(new ApplicationLifetime(NullLogger<ApplicationLifetime>.Instance), options.Value.Dapr.EffectiveProviderCallGrace, TimeProvider.System));

        await Assert.ThrowsAsync<RunOwnerUnavailableException>(() => owner.GetAsync(123, CancellationToken.None));
    }

    private sealed class NoIntegrations : IIntegrationCatalog
    {
        public Integration? Find(long integrationId) => null;
    }

    /// <summary>The sidecar's answer to every call, without a network.</summary>
    private sealed class Answer(HttpStatusCode status) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromResult(new HttpResponseMessage(status) { Content = new StringContent("invalid api token\n") });
    }
}
