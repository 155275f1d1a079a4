using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>An answer written by the exception handler (an unexpected failure) carries the security headers too.</summary>
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
        Assert.True(response.Headers.TryGetValues("X-Content-Type-Options", out var nosniff),
            $"the 500 has no X-Content-Type-Options; its headers: {response.Headers}{response.Content.Headers}");
        Assert.Equal("nosniff", Assert.Single(nosniff));
        Assert.True(response.Headers.CacheControl?.NoStore == true, $"Cache-Control is '{response.Headers.CacheControl}'");
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
