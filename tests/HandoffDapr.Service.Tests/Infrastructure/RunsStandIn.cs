using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>One answer of the stand-in's <c>GET /runs</c>.</summary>
internal sealed record RunsAnswer(int Status, string? Body, string? ContentType, string? WwwAuthenticate)
{
    public static RunsAnswer Json(string body) => new(200, body, "application/json", null);

    /// <summary>One run with one launched repository and its running agent.</summary>
    public const string OneRunJson = """[{"run_id":881,"group_id":7,"launches":[{"repository":"acme/privaterepo","phase":"launched","generation":1,"agent_id":"bc-1"}],"coding_agents":{"bc-1":{"id":"bc-1","status":"running"}}}]""";
}

/// <summary>
/// Serves the status page's files from the source tree and answers <c>GET /runs</c> call by call, for answers the real
/// service cannot be made to give on cue. Its <c>pages</c> add pages: the page as served, with the given HTML
/// put before its script (<c>Before</c>, e.g. to wrap fetch) and after it (<c>After</c>, e.g. to note what the script left).
/// </summary>
internal sealed class RunsStandIn : IDisposable
{
    private readonly HttpListener listener = new();
    private readonly Func<int, RunsAnswer> answer;
    private readonly IReadOnlyDictionary<string, (string Before, string After)> pages;
    private readonly string ui = Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "src", "HandoffDapr.Service", "wwwroot", "ui");
    private readonly ConcurrentQueue<(string PathAndQuery, string? Authorization)> requests = new();
    private int calls;

    public RunsStandIn(Func<int, RunsAnswer> answer, IReadOnlyDictionary<string, (string Before, string After)>? pages = null)
    {
        this.answer = answer;
        this.pages = pages ?? new Dictionary<string, (string, string)>();
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Address = new Uri($"http://127.0.0.1:{port}/");
        listener.Prefixes.Add(Address.ToString());
        listener.Start();
        _ = Task.Run(ServeAsync);
    }

    public Uri Address { get; }

    /// <summary>The calls of <c>GET /runs</c> answered so far.</summary>
    public int Calls => Volatile.Read(ref calls);

    /// <summary>Every request the browser sent, its path and query as sent and its Authorization header.</summary>
    public IReadOnlyList<(string PathAndQuery, string? Authorization)> Requests => [.. requests];

    private async Task ServeAsync()
    {
        while (listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync();
            }
            catch (Exception exception) when (exception is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            _ = Task.Run(() => AnswerAsync(context));
        }
    }

    private async Task AnswerAsync(HttpListenerContext context)
    {
        var response = context.Response;
        try
        {
            requests.Enqueue((context.Request.RawUrl ?? string.Empty, context.Request.Headers["Authorization"]));
            var path = context.Request.Url!.AbsolutePath;
            if (pages.TryGetValue(path, out var page))
            {
                var html = (await File.ReadAllTextAsync(Path.Combine(ui, "index.html")))
                    .Replace("<script src=\"app.js\"></script>", page.Before + "<script src=\"app.js\"></script>" + page.After, StringComparison.Ordinal);
                response.ContentType = "text/html";
                await Write(response, html);
                return;
            }

            if (path.StartsWith("/ui/", StringComparison.Ordinal))
            {
                var file = Path.Combine(ui, Path.GetFileName(path));
                response.ContentType = path.EndsWith(".js", StringComparison.Ordinal) ? "text/javascript" : path.EndsWith(".css", StringComparison.Ordinal) ? "text/css" : "text/html";
                await Write(response, File.Exists(file) ? await File.ReadAllTextAsync(file) : string.Empty);
                return;
            }

            if (path != "/runs")
            {
                response.StatusCode = 404;
                return;
            }

            var next = answer(Interlocked.Increment(ref calls));
            response.StatusCode = next.Status;
            if (next.WwwAuthenticate is not null)
            {
                response.Headers["WWW-Authenticate"] = next.WwwAuthenticate;
            }

            if (next.ContentType is not null)
            {
                response.ContentType = next.ContentType;
            }

            await Write(response, next.Body ?? string.Empty);
        }
        catch (Exception exception) when (exception is HttpListenerException or ObjectDisposedException or IOException)
        {
        }
        finally
        {
            try
            {
                response.Close();
            }
            catch (Exception exception) when (exception is HttpListenerException or ObjectDisposedException)
            {
            }
        }
    }

    private static async Task Write(HttpListenerResponse response, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        response.ContentLength64 = bytes.Length;
        await response.OutputStream.WriteAsync(bytes);
    }

    public void Dispose() => listener.Close();
}
