using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>
/// A generated corpus of hostile input (fixed seed) against the manual trigger, the completion event and the
/// webhook: every answer is a success or a 4xx problem, never a 5xx, and the service still answers afterwards.
/// </summary>
public sealed class BadInputCorpusTests : IDisposable
{
    private const string WebhookSecret = "corpus-webhook-secret-0123456789abcdef";
    private const string WebhookPath = "/webhooks/cursor/42?run_id=78";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public BadInputCorpusTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:Integrations:42:WebhookSecret"] = WebhookSecret,
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000",
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "100000",
        });
        client = factory.CreateClient();
    }

    [Fact]
    public async Task Hostile_input_never_gets_a_server_error()
    {
        var cases = Corpus(new Random(20261124)).ToList();
        Assert.True(cases.Count >= 200, $"the corpus has {cases.Count} cases");

        var serverErrors = new List<string>();
        var webhookStatuses = new List<(bool Signed, int Status)>();
        foreach (var (name, path, body, signed) in cases)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new("application/json");
            if (signed)
            {
                request.Headers.Add("X-Webhook-Signature", WebhookSignature.Sign(WebhookSecret, body));
            }

            var response = await client.SendAsync(request);
            var status = (int)response.StatusCode;
            if (path == WebhookPath)
            {
                webhookStatuses.Add((signed, status));
            }

            if (status >= 500)
            {
                serverErrors.Add($"{name} → {status}");
            }
            else if (status >= 400)
            {
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            }
        }

        Assert.Empty(serverErrors);
        // The signed copies got past the signature to the parser (some are read, some refused as bad bodies), and the
        // unsigned one did not: refused at the signature, the webhook's corpus would prove nothing about its parsing.
        Assert.Equal([401], webhookStatuses.Where(w => !w.Signed).Select(w => w.Status));
        Assert.Contains(webhookStatuses, w => w.Signed && w.Status is >= 200 and < 300);
        Assert.Contains(webhookStatuses, w => w.Signed && w.Status == 400);
        Assert.DoesNotContain(webhookStatuses, w => w.Signed && w.Status == 401);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
    }

    private static IEnumerable<(string Name, string Path, byte[] Body, bool Signed)> Corpus(Random random)
    {
        var trigger = Payloads.Trigger(Payloads.Run(77, ["acme/shop"], automation: false)).ToJsonString();
        var run = Payloads.Run(78, ["acme/shop"]).ToJsonString();
        var webhook = new JsonObject
        {
            ["event"] = "statusChange", ["id"] = "bc-000001", ["status"] = "FINISHED",
            ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/shop" },
            ["target"] = new JsonObject { ["prUrl"] = "https://github.com/acme/shop/pull/1" },
        }.ToJsonString();

        foreach (var (path, valid, signed) in new[]
        {
            ("/runs/77/handoff", trigger, false),
            ("/events/autofix-run-completed", run, false),
            (WebhookPath, webhook, true),
        })
        {
            var n = 0;
            foreach (var mutated in Mutations(valid, random))
            {
                yield return ($"{path} #{n++}", path, mutated, signed);
            }

            // Unsigned and wrongly signed copies of the webhook corpus are refused before parsing.
            if (signed)
            {
                yield return ($"{path} unsigned", path, Encoding.UTF8.GetBytes(valid), false);
            }
        }

        foreach (var path in new[] { "/runs/0/handoff", "/runs/-1/handoff", "/runs/9223372036854775808/handoff", "/runs/%2e%2e/handoff", "/runs/1e3/handoff", "/webhooks/cursor/-1", "/webhooks/cursor/abc?run_id=x", "/webhooks/cursor/42?run_id=-5" })
        {
            yield return ($"path {path}", path, Encoding.UTF8.GetBytes(trigger), path.StartsWith("/webhooks", StringComparison.Ordinal));
        }
    }

    private static IEnumerable<byte[]> Mutations(string valid, Random random)
    {
        byte[] Text(string text) => Encoding.UTF8.GetBytes(text);

        // Truncated at random places.
        for (var i = 0; i < 15; i++)
        {
            yield return Text(valid[..random.Next(0, valid.Length)]);
        }

        // Single characters replaced by structural ones.
        const string structural = "{}[]\":,\\\u0000\u001f";
        for (var i = 0; i < 15; i++)
        {
            var chars = valid.ToCharArray();
            chars[random.Next(chars.Length)] = structural[random.Next(structural.Length)];
            yield return Text(new string(chars));
        }

        // Every value of the document replaced, one at a time, by a hostile value.
        JsonNode?[] hostile =
        [
            null, -1, 0, long.MaxValue, -long.MaxValue, 1e308, "x", "", true,
            new JsonArray(), new JsonObject(), new string('A', 300_000),
            "../../etc/passwd", "https://evil.example/acme/shop", "acme/shop\r\nX-Injected: 1", "\u202e\u200b\ufeff", "😀🇺🇳", "\u0000\u0007",
        ];
        var root = JsonNode.Parse(valid)!;
        var paths = ValuePaths(root, "$").ToList();
        for (var i = 0; i < 40; i++)
        {
            var copy = JsonNode.Parse(valid)!;
            var target = paths[random.Next(paths.Count)];
            Replace(copy, target, hostile[random.Next(hostile.Length)]?.DeepClone());
            yield return Text(copy.ToJsonString());
        }

        // Deep nesting, duplicate keys, lone surrogates, big numbers written out, wrong top-level types.
        yield return Text(new string('[', 10_000) + new string(']', 10_000));
        yield return Text("{\"a\":" + string.Concat(Enumerable.Repeat("{\"a\":", 500)) + "1" + new string('}', 501));
        yield return Text(valid.Insert(1, "\"run_id\":1,\"run_id\":2,\"group_id\":3,"));
        yield return Text(valid.Replace("acme", "\\ud800", StringComparison.Ordinal));
        yield return Text(valid.Replace("acme", "\\udfff\\ud800", StringComparison.Ordinal));
        // Property names that are lone surrogates: a lookup that meets one (names are searched from the end) cannot compare it.
        yield return Text(valid.Insert(valid.Length - 1, ",\"\\ud800\":1"));
        yield return Text(valid.Replace("}", ",\"\\udc00\":1}", StringComparison.Ordinal));
        yield return Text(valid.Replace("{\"", "{\"\\udc00\":1,\"", StringComparison.Ordinal));
        yield return Text(valid.Replace("456", "99999999999999999999999999", StringComparison.Ordinal));
        yield return Text(valid.Replace("42", "4.2e1", StringComparison.Ordinal));
        yield return Text("[" + valid + "]");
        yield return Text("\"" + valid.Replace("\"", "\\\"", StringComparison.Ordinal) + "\"");
        yield return [0xff, 0xfe, 0x00, 0x7b];
        yield return [0xef, 0xbb, 0xbf, .. Text(valid)];
        yield return Text(valid + "garbage");
        yield return Text("");
        yield return Text("null");
    }

    private static IEnumerable<string> ValuePaths(JsonNode node, string path)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (key, value) in obj)
                {
                    yield return $"{path}.{key}";
                    if (value is not null)
                    {
                        foreach (var inner in ValuePaths(value, $"{path}.{key}"))
                        {
                            yield return inner;
                        }
                    }
                }

                break;
            case JsonArray array:
                for (var i = 0; i < array.Count; i++)
                {
                    yield return $"{path}[{i}]";
                    if (array[i] is { } item)
                    {
                        foreach (var inner in ValuePaths(item, $"{path}[{i}]"))
                        {
                            yield return inner;
                        }
                    }
                }

                break;
        }
    }

    private static void Replace(JsonNode root, string path, JsonNode? value)
    {
        var parts = System.Text.RegularExpressions.Regex.Matches(path[1..], @"\.([^.\[]+)|\[(\d+)\]");
        var current = root;
        for (var i = 0; i < parts.Count - 1; i++)
        {
            current = parts[i].Groups[1].Success ? current[parts[i].Groups[1].Value]! : current[int.Parse(parts[i].Groups[2].Value)]!;
        }

        var last = parts[^1];
        if (last.Groups[1].Success)
        {
            current[last.Groups[1].Value] = value;
        }
        else
        {
            current[int.Parse(last.Groups[2].Value)] = value;
        }
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
