using System.Net;
using Dapr.Actors;
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
        var owner = Owner(new Answer(status, "invalid api token\n"));

        var unavailable = await Assert.ThrowsAsync<RunOwnerUnavailableException>(() => owner.GetAsync(123, CancellationToken.None));
        Assert.IsType<System.Security.Authentication.AuthenticationException>(unavailable.InnerException);
    }

    /// <summary>
    /// daprd's own error for an actor call it could not deliver (placement has no host for the type yet, or the
    /// resiliency policy's circuit breaker is open): its error body without the app's X-DaprErrorResponseHeader, which
    /// the SDK throws as a DaprApiException, not an ActorMethodInvocationException (what a failed turn gives). The
    /// caller is told the run is unavailable (503, try again), not a 500 with the sidecar's message.
    /// </summary>
    [Fact]
    public async Task Sidecar_that_cannot_deliver_the_actor_call_is_unavailable_not_an_unhandled_exception()
    {
        var owner = Owner(new Answer(
            HttpStatusCode.InternalServerError,
            """{"errorCode":"ERR_ACTOR_INVOKE_METHOD","message":"error invoke actor method: failed to lookup actor: did not find address for actor 'HandoffRunActor||123'"}"""));

        var unavailable = await Assert.ThrowsAsync<RunOwnerUnavailableException>(() => owner.GetAsync(123, CancellationToken.None));
        Assert.IsType<Dapr.DaprApiException>(unavailable.InnerException);
    }

    private static ActorRunOwner Owner(HttpMessageHandler sidecar)
    {
        var proxies = new ActorProxyFactory(
            new ActorProxyOptions { HttpEndpoint = "http://127.0.0.1:3500", UseJsonSerialization = true, JsonSerializerOptions = HandoffJsonContext.CreateOptions() },
            sidecar);
        var options = Options.Create(new HandoffOptions());
        var engine = new HandoffEngine(new NoIntegrations(), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), TimeProvider.System, NullLogger<HandoffEngine>.Instance);
        return new ActorRunOwner(
            proxies, options, engine, new RequestDrain(options, new HandoffDapr.Service.Configuration.HostingContext(HandoffDapr.Service.Configuration.HostingMode.Dapr), TimeProvider.System, NullLogger<RequestDrain>.Instance),
            new ProviderCallCutoff(new ApplicationLifetime(NullLogger<ApplicationLifetime>.Instance), options.Value.Dapr.EffectiveProviderCallGrace, TimeProvider.System));
    }

    private sealed class NoIntegrations : IIntegrationCatalog
    {
        public Integration? Find(long integrationId) => null;
    }

    /// <summary>The sidecar's answer to every call, without a network.</summary>
    private sealed class Answer(HttpStatusCode status, string body) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromResult(new HttpResponseMessage(status) { Content = new StringContent(body) });
    }
}
