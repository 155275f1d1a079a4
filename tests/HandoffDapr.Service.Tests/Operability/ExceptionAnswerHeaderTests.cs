using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
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
        using var factory = new EmbeddedServiceFactory(temp.File("broken.db"), cursor.Url);
        using var client = factory.CreateClient();
        (await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(Payloads.Run(900, ["acme/shop"], automation: false)))).EnsureSuccessStatusCode();
        // A row whose state cannot be read, and no stored view: the read throws, the exception handler answers.
        await using (var connection = new SqliteConnection($"Data Source={factory.DataPath};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "UPDATE runs SET state = '{not json', view = NULL";
            await command.ExecuteNonQueryAsync();
        }

        var response = await client.GetAsync("/runs/900/handoff");

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        AssertSecurityHeaders(response);
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
