using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>
/// A fault no endpoint expected (a bug) is a 500 problem that says nothing of it, also in the Development environment
/// the quick start runs in, where ASP.NET Core would otherwise put its developer exception page in front.
/// </summary>
public sealed class UnexpectedFaultTests
{
    private const string Secret = "unexpected-fault-text-93c1";

    /// <summary>A request no endpoint takes meets a fault behind all of the app's own middleware.</summary>
    private sealed class FaultBehindTheApp : IStartupFilter
    {
        public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
        {
            next(app);
            app.Run(_ => throw new InvalidOperationException(Secret));
        };
    }

    [Theory]
    [InlineData("Development")]
    [InlineData("Production")]
    public async Task Unexpected_fault_is_a_500_problem_without_the_exceptions_text(string environment)
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var factory = new EmbeddedServiceFactory(temp.File("fault.db"), cursor.Url).WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment(environment);
            builder.ConfigureServices(services => services.AddTransient<IStartupFilter, FaultBehindTheApp>());
        });

        var response = await factory.CreateClient().GetAsync("/no-such-route");

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var body = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain(Secret, body, StringComparison.Ordinal);
        Assert.DoesNotContain(nameof(InvalidOperationException), body, StringComparison.Ordinal);
    }
}
