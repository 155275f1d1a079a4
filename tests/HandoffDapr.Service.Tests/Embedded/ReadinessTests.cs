using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Embedded mode's <c>/readyz</c> says whether the data file can be used, not only whether SQLite answers.
/// </summary>
public sealed class ReadinessTests : IDisposable
{
    private readonly TempDirectory temp = new();

    /// <summary>
    /// A data file deleted under the running service: its open connections could go on writing to the deleted file (lost
    /// at the next start; DataFileGoneTests), and new ones find no tables. The probe used to answer 200 from a
    /// <c>SELECT 1</c>, on a connection that even created an empty file in the data file's place.
    /// </summary>
    [Fact]
    public async Task Readiness_fails_when_the_data_file_is_deleted_under_the_service()
    {
        var dataPath = temp.File("handoff.db");
        using var factory = new EmbeddedServiceFactory(dataPath, "http://127.0.0.1:1");
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);

        foreach (var file in new[] { dataPath, dataPath + "-wal", dataPath + "-shm" })
        {
            File.Delete(file);
        }

        var ready = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.False(File.Exists(dataPath), "the probe must not create a data file of its own");
    }

    /// <summary>
    /// The failed probe's log says what became of the data file, as a result of the check and not as an exception with its
    /// stack trace: a file deleted under the service is the operator's to restore, not a fault of the service.
    /// </summary>
    [Fact]
    public async Task Readiness_failing_for_a_deleted_data_file_is_logged_as_such_without_an_exception()
    {
        var dataPath = temp.File("handoff.db");
        var logs = new Microsoft.Extensions.Logging.Testing.FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(dataPath, "http://127.0.0.1:1") { Logs = logs };
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
        foreach (var file in new[] { dataPath, dataPath + "-wal", dataPath + "-shm" })
        {
            File.Delete(file);
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);

        var failed = Assert.Single(logs.GetSnapshot(), record => record.Message.Contains("The data file could not be opened (deleted or moved?)", StringComparison.Ordinal));
        Assert.Null(failed.Exception);
    }

    /// <summary>A data file replaced by one without the service's tables (an empty file, another database) reads not ready.</summary>
    [Fact]
    public async Task Readiness_fails_when_the_data_file_no_longer_holds_the_run_tables()
    {
        var dataPath = temp.File("handoff.db");
        using var factory = new EmbeddedServiceFactory(dataPath, "http://127.0.0.1:1");
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);

        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={dataPath};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "ALTER TABLE runs RENAME TO runs_gone";
            await command.ExecuteNonQueryAsync();
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);
    }

    /// <summary>
    /// A data file that can no longer be written (its permissions changed, its file system remounted read-only): the
    /// probe's read succeeded while every write failed. Start-up refuses such a file; the probe now says so too.
    /// </summary>
    [Fact]
    public async Task Readiness_fails_when_the_data_file_can_only_be_read_and_says_why()
    {
        var dataPath = temp.File("handoff.db");
        var logs = new Microsoft.Extensions.Logging.Testing.FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(dataPath, "http://127.0.0.1:1") { Logs = logs };
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);

        using (new ReadOnlyFile(dataPath))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);
            Assert.Contains(logs.GetSnapshot(), record => record.Message.Contains("The data file can only be read", StringComparison.Ordinal));
        }

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
    }

    /// <summary>
    /// A probe never changes anything: a method other than GET or HEAD on either one is a client's mistake (405), not a
    /// run of the health checks (the readiness probe's reads the data file).
    /// </summary>
    [Theory]
    [InlineData("/healthz", "POST")]
    [InlineData("/readyz", "POST")]
    [InlineData("/readyz", "DELETE")]
    public async Task Probes_answer_only_get_and_head(string path, string method)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("methods.db"), "http://127.0.0.1:1");
        var client = factory.CreateClient();

        var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/method-not-allowed", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(["GET", "HEAD"], response.Content.Headers.Allow.Order());
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path))).StatusCode);
    }

    public void Dispose() => temp.Dispose();
}
