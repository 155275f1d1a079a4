using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Infrastructure;

public static class HttpExtensions
{
    public static Task<HttpResponseMessage> PostJsonAsync(this HttpClient client, string path, JsonNode body, string contentType = "application/json") =>
        client.PostRawAsync(path, body.ToJsonString(), contentType);

    public static Task<HttpResponseMessage> PostRawAsync(this HttpClient client, string path, string body, string contentType = "application/json")
    {
        var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        return client.PostAsync(path, content);
    }

    public static async Task<JsonObject> ReadJsonAsync(this HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();

    /// <summary>The id of the first agent a launch's answer lists under <c>successes</c>.</summary>
    public static string FirstLaunchedAgentId(this JsonNode launched) =>
        launched["successes"]![0]!["coding_agent_state"]!["id"]!.GetValue<string>();

    /// <inheritdoc cref="FirstLaunchedAgentId"/>
    public static async Task<string> ReadFirstLaunchedAgentIdAsync(this HttpResponseMessage response) =>
        (await response.ReadJsonAsync()).FirstLaunchedAgentId();

    public static async Task<JsonArray> ReadJsonArrayAsync(this HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsArray();

    /// <summary>
    /// Starts the service on a real Kestrel port on loopback, where the test server would not enforce Kestrel's limits
    /// or let a test write raw bytes; returns the address it listens on.
    /// </summary>
    public static Uri StartOnKestrel<TEntryPoint>(this WebApplicationFactory<TEntryPoint> factory)
        where TEntryPoint : class
    {
        // An endpoint of its own, not UseKestrel(0): a factory made by WithWebHostBuilder loses that port and binds Kestrel's
        // default, localhost:5000, where two such tests at once collide (the second's start fails and its host is disposed).
        factory.UseKestrel(kestrel => kestrel.Listen(System.Net.IPAddress.Loopback, 0));
        factory.StartServer();
        return new Uri(factory.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
    }

    /// <summary>
    /// Writes <paramref name="request"/> as it is over a raw socket to a Kestrel port on loopback (bytes no HttpClient
    /// would send), and returns all it answered until it closed the connection, or 30 s passed.
    /// </summary>
    public static async Task<string> SendRawAsync(int port, string request)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var socket = new System.Net.Sockets.TcpClient();
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, port, timeout.Token);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request), timeout.Token);
        using var response = new MemoryStream();
        try
        {
            await stream.CopyToAsync(response, timeout.Token);
        }
        catch (IOException)
        {
            // A reset after the answer (Kestrel closes such connections): what came before it is the answer.
        }

        return Encoding.UTF8.GetString(response.ToArray());
    }
}

/// <summary>A scratch directory for one test's SQLite file.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("handoff-tests-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
