using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>Answers written outside the endpoints (by the exception handler, by the shutdown drain) carry the security headers too.</summary>
public sealed class ExceptionAnswerHeaderTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task A_500_from_the_exception_handler_carries_nosniff_and_no_store()
    {
        using var embedded = new EmbeddedServiceFactory(temp.File("broken.db"), cursor.Url);
        // A fault no endpoint answers for (a bug): the exception handler writes the answer.
        using var factory = embedded.WithWebHostBuilder(builder => builder.ConfigureTestServices(services =>
            services.Replace(ServiceDescriptor.Singleton<HandoffDapr.Service.Hosting.IRecentRuns>(new FaultingRecentRuns()))));
        using var client = factory.CreateClient();

        var response = await client.GetAsync("/runs");

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.DoesNotContain(FaultingRecentRuns.Text, await response.Content.ReadAsStringAsync());
        AssertSecurityHeaders(response);
    }

    private sealed class FaultingRecentRuns : HandoffDapr.Service.Hosting.IRecentRuns
    {
        public const string Text = "fault-text-that-must-not-leave-3b9c";

        public Task<IReadOnlyList<HandoffDapr.Core.Handoff.RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken) =>
            throw new InvalidOperationException(Text);
    }

    [Fact]
    public async Task A_503_refused_once_shutdown_is_over_carries_nosniff_and_no_store()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("closed.db"), cursor.Url);
        using var client = factory.CreateClient();
        var drain = factory.Services.GetRequiredService<HandoffDapr.Service.Hosting.RequestDrain>();
        await drain.StoppedAsync(CancellationToken.None); // shutdown is over: the drain refuses what still arrives

        var response = await client.GetAsync("/runs/900/handoff");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        AssertSecurityHeaders(response);
    }

    private static void AssertSecurityHeaders(HttpResponseMessage response)
    {
        Assert.True(response.Headers.TryGetValues("X-Content-Type-Options", out var nosniff),
            $"the {(int)response.StatusCode} has no X-Content-Type-Options; its headers: {response.Headers}{response.Content.Headers}");
        Assert.Equal("nosniff", Assert.Single(nosniff));
        Assert.True(response.Headers.CacheControl?.NoStore == true, $"Cache-Control is '{response.Headers.CacheControl}'");
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
