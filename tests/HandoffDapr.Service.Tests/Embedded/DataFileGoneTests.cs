using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// A data file deleted (or moved away) under the running service: its open connections would go on committing into a
/// file that is gone when the process ends, and the next start makes an empty file in its place. An event acknowledged
/// into it would be lost, and a redelivery of one handled before would launch its repositories a second time. Found by
/// an audit of embedded mode's store (seen by hand: two agents for one repository).
/// </summary>
public sealed class DataFileGoneTests : IDisposable
{
    private const string Route = "/events/autofix-run-completed";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_completion_event_is_not_acknowledged_into_a_data_file_deleted_or_moved_under_the_service(bool moved)
    {
        var dataPath = temp.File("handoff.db");
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(dataPath, cursor.Url) { Logs = logs };
        using var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync(Route, Payloads.Run(400, ["acme/shop"]))).StatusCode);
        await factory.RunScheduleAsync();
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        if (moved)
        {
            File.Move(dataPath, temp.File("elsewhere.db"));
        }
        else
        {
            foreach (var file in new[] { dataPath, dataPath + "-wal", dataPath + "-shm" })
            {
                File.Delete(file);
            }
        }

        var answer = await client.PostJsonAsync(Route, Payloads.Run(401, ["acme/shop"]));

        // Answered 503, the broker delivers it again once the service runs on its file again; a 200 is the event lost.
        Assert.Equal(HttpStatusCode.ServiceUnavailable, answer.StatusCode);
        Assert.DoesNotContain("DataPath", await answer.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
        // Nor is anything read from the lost file (a redelivery judged a no-op there would be answered 200, and lost).
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/runs/400/handoff")).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync(Route, Payloads.Run(402, ["acme/shop"]))).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);

        var gone = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DataFileGone");
        Assert.Contains(Path.GetFullPath(dataPath), gone.Message, StringComparison.Ordinal);
        Assert.Contains(logs.GetSnapshot(), record => record.Message.Contains("deleted or moved while the service ran: restart", StringComparison.Ordinal));
        Assert.False(File.Exists(dataPath), "nothing may create a data file in the lost one's place");
        Assert.Equal(1, cursor.AgentsFor("acme/shop")); // run 400's launch, made before the file went: no other
    }

    /// <summary>
    /// A file put back at the path is not trusted: the process's connections may hold another one (the deleted file), and
    /// only a restart opens what is there.
    /// </summary>
    [Fact]
    public async Task A_data_file_put_back_after_it_was_found_gone_is_used_only_after_a_restart()
    {
        var dataPath = temp.File("handoff.db");
        var copy = temp.File("copy.db");
        using (var factory = new EmbeddedServiceFactory(dataPath, cursor.Url))
        {
            using var client = factory.CreateClient();
            Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync(Route, Payloads.Run(410, ["acme/shop"]))).StatusCode);
            File.Move(dataPath, copy);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync(Route, Payloads.Run(411, ["acme/shop"]))).StatusCode);
            File.Move(copy, dataPath);

            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync(Route, Payloads.Run(412, ["acme/shop"]))).StatusCode);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);
        }

        using var restarted = new EmbeddedServiceFactory(dataPath, cursor.Url);
        using var again = restarted.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await again.GetAsync("/readyz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await again.GetAsync("/runs/410/handoff")).StatusCode);
        // Refused writes are not made at all once the file was found gone (the one that found it had committed already).
        Assert.Equal(HttpStatusCode.NotFound, (await again.GetAsync("/runs/412/handoff")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await again.PostJsonAsync(Route, Payloads.Run(412, ["acme/shop"]))).StatusCode);
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
