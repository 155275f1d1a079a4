using System.Net;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Embedded mode stores each run's view, as the API writes it, with every save; a read sends it as stored. It must be
/// the answer the run's state gives, and never outlive the state it was written for.
/// </summary>
public sealed class StoredViewTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task The_stored_view_is_the_answer_the_runs_state_gives()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("views.db"), cursor.Url);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/700/handoff", Payloads.Trigger(Payloads.Run(700, ["acme/shop", "acme/api"], automation: false)));
        Assert.NotNull(factory.Store.LoadView(700));

        var stored = await client.GetAsync("/runs/700/handoff");
        await ForgetViews(factory.DataPath);
        Assert.Null(factory.Store.LoadView(700));
        var built = await client.GetAsync("/runs/700/handoff");

        Assert.Equal(HttpStatusCode.OK, stored.StatusCode);
        Assert.Equal(await built.Content.ReadAsStringAsync(), await stored.Content.ReadAsStringAsync());
        Assert.Equal(built.Content.Headers.ContentType, stored.Content.Headers.ContentType);
        Assert.Equal(2, (await stored.ReadJsonAsync())["coding_agents"]!.AsObject().Count);
    }

    [Fact]
    public async Task A_stored_view_answers_only_to_its_runs_group()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("groups.db"), cursor.Url);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/701/handoff", Payloads.Trigger(Payloads.Run(701, ["acme/shop"], automation: false)));

        var own = await client.GetAsync($"/runs/701/handoff?group_id={Payloads.GroupId}");
        var other = await client.GetAsync("/runs/701/handoff?group_id=999");

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
    }

    [Fact]
    public async Task HEAD_answers_the_runs_reads_with_the_status_and_headers_GET_gives()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("head.db"), cursor.Url);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/703/handoff", Payloads.Trigger(Payloads.Run(703, ["acme/shop"], automation: false)));

        foreach (var (path, status) in new[] { ("/runs/703/handoff", HttpStatusCode.OK), ("/runs/703/handoff?group_id=999", HttpStatusCode.NotFound), ("/runs?limit=5", HttpStatusCode.OK), ("/runs?limit=0", HttpStatusCode.BadRequest) })
        {
            var get = await client.GetAsync(path);
            var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

            Assert.Equal(status, get.StatusCode);
            Assert.Equal(status, head.StatusCode);
            Assert.Equal(get.Content.Headers.ContentType, head.Content.Headers.ContentType);
        }
    }

    [Fact]
    public async Task A_save_by_an_earlier_release_on_the_same_file_is_read_from_its_state_not_the_view_left_behind()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("rolling.db"), cursor.Url);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/702/handoff", Payloads.Trigger(Payloads.Run(702, ["acme/shop"], automation: false)));
        var loaded = await factory.Store.LoadAsync(702, CancellationToken.None);

        Assert.NotEmpty(loaded.State!.Timeline);
        await EarlierRelease.SaveAsync(factory.DataPath, loaded.State! with { Timeline = [] }, loaded.Version);
        var view = await (await client.GetAsync("/runs/702/handoff")).ReadJsonAsync();

        Assert.Empty(view["timeline"]!.AsArray());
        Assert.Null(factory.Store.LoadView(702));
    }

    /// <summary>
    /// A view stored in an earlier shape of the answer (<see cref="SqliteRunStore.ViewFormat"/> 1, before <c>refused</c>),
    /// though written for the row's latest state, is not sent: the read builds the view from the state.
    /// </summary>
    [Fact]
    public async Task A_view_stored_in_an_earlier_shape_is_not_sent_the_read_builds_it_from_the_state()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("shape.db"), cursor.Url);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/704/handoff", Payloads.Trigger(Payloads.Run(704, ["acme/shop"], automation: false)));
        var current = await (await client.GetAsync("/runs/704/handoff")).Content.ReadAsStringAsync();

        Assert.Equal(1, await ExecuteAsync(factory.DataPath, "UPDATE runs SET view = CAST('{\"run_id\":704,\"shape\":\"earlier\"}' AS BLOB), view_format = 1 WHERE run_id = 704"));

        Assert.Null(factory.Store.LoadView(704));
        Assert.Equal(current, await (await client.GetAsync("/runs/704/handoff")).Content.ReadAsStringAsync());
    }

    private static Task ForgetViews(string dataPath) => ExecuteAsync(dataPath, "UPDATE runs SET view = NULL");

    /// <summary>Changes the data file as another program would; the rows changed.</summary>
    private static async Task<int> ExecuteAsync(string dataPath, string sql)
    {
        await using var connection = new SqliteConnection($"Data Source={dataPath};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return await command.ExecuteNonQueryAsync();
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
