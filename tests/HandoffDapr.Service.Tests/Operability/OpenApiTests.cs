using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;

namespace HandoffDapr.Service.Tests.Operability;

public sealed class OpenApiTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Development_serves_an_openapi_document_with_every_endpoint_and_its_problems()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var document = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!;

        var paths = document["paths"]!.AsObject();
        foreach (var path in new[] { "/runs/{runId}/handoff", "/runs", "/events/autofix-run-completed", "/webhooks/cursor/{integrationId}", "/runs/{runId}/agents/{agentId}/stop", "/runs/{runId}/agents/{agentId}/followup" })
        {
            Assert.True(paths.ContainsKey(path), path);
        }

        var trigger = paths["/runs/{runId}/handoff"]!["post"]!["responses"]!.AsObject();
        Assert.True(trigger.ContainsKey("202"));
        Assert.True(trigger.ContainsKey("404"));
        Assert.True(trigger.ContainsKey("429"));
        Assert.NotNull(paths["/runs/{runId}/handoff"]!["post"]!["requestBody"]);
        Assert.Contains("HandoffResult", document["components"]!["schemas"]!.AsObject().Select(s => s.Key));
    }

    [Fact]
    public async Task A_document_name_other_than_v1_is_a_404_problem_like_any_unknown_route()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-v2.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var response = await factory.CreateClient().GetAsync("/openapi/v2.json");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Openapi_document_offers_only_the_body_fields_the_service_reads_and_marks_required_ones_non_null()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-bodies.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var schemas = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!;

        // The group is read from group.id or metadata.group_id; a top-level group_id would be ignored.
        Assert.False(schemas["RunSnapshot"]!["properties"]!.AsObject().ContainsKey("group_id"));
        foreach (var id in new[] { "group_id", "integration_id" })
        {
            var schema = schemas["HandoffRequest"]!["properties"]![id]!;
            Assert.Equal("integer", schema["type"]!.GetValue<string>());
            Assert.Equal(9007199254740991, schema["maximum"]!.GetValue<long>());
        }

        Assert.Equal("string", schemas["FollowupRequest"]!["properties"]!["text"]!["type"]!.GetValue<string>());
        Assert.Equal(1, schemas["FollowupRequest"]!["properties"]!["text"]!["minLength"]!.GetValue<int>());
    }

    /// <summary>
    /// The bodies the endpoints read themselves (not bound by the framework, so that a bad one gets our own problem) are
    /// declared as the framework would declare them: required, in each JSON media type the service takes.
    /// </summary>
    [Theory]
    [InlineData("TriggerHandoff", "HandoffRequest")]
    [InlineData("AutofixRunCompleted", "RunSnapshot")]
    [InlineData("AgentFollowup", "FollowupRequest")]
    public async Task Openapi_document_declares_a_required_json_body_in_every_media_type_the_service_reads(string operationId, string schemaName)
    {
        using var factory = new EmbeddedServiceFactory(temp.File($"openapi-body-{operationId}.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var paths = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["paths"]!.AsObject();

        var operation = Assert.Single(paths.SelectMany(path => path.Value!.AsObject().Select(op => op.Value!)), op => op["operationId"]?.GetValue<string>() == operationId);
        var body = operation["requestBody"]!;

        Assert.True(body["required"]?.GetValue<bool>() == true, $"{operationId}: body not required");
        var content = body["content"]!.AsObject();
        Assert.Equal(HandoffDapr.Service.Api.JsonBody.MediaTypes.Order(), content.Select(media => media.Key).Order());
        Assert.All(content, media => Assert.Equal($"#/components/schemas/{schemaName}", media.Value!["schema"]!["$ref"]!.GetValue<string>()));
    }

    [Fact]
    public async Task Openapi_document_declares_ids_as_positive_integers_and_every_problem_an_operation_can_answer()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-complete.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var paths = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["paths"]!.AsObject();

        var operations = paths.SelectMany(path => path.Value!.AsObject().Select(op => (Name: $"{op.Key.ToUpperInvariant()} {path.Key}", Operation: op.Value!))).ToList();
        foreach (var (name, operation) in operations)
        {
            foreach (var parameter in operation["parameters"]?.AsArray() ?? [])
            {
                var schema = parameter!["schema"]!;
                switch (parameter["name"]!.GetValue<string>())
                {
                    case "runId" or "integrationId" or "run_id" or "group_id":
                        Assert.Equal("integer", schema["type"]!.GetValue<string>());
                        Assert.Equal("int64", schema["format"]!.GetValue<string>());
                        Assert.Equal(1, schema["minimum"]!.GetValue<int>());
                        break;
                    case "limit":
                        Assert.Equal("integer", schema["type"]!.GetValue<string>());
                        Assert.Equal(1, schema["minimum"]!.GetValue<int>());
                        Assert.Equal(200, schema["maximum"]!.GetValue<int>());
                        Assert.Equal(50, schema["default"]!.GetValue<int>());
                        break;
                }
            }

            var responses = operation["responses"]!.AsObject();
            var expected = new List<string>();
            if (!name.Contains("/webhooks/"))
            {
                // Loopback-only, as no Handoff:ApiToken is set: a remote caller's 403, and no 401.
                expected.Add("403");
            }

            expected.Add("503");

            if (name.StartsWith("POST") && !name.EndsWith("/stop"))
            {
                expected.AddRange(["400", "408", "413", "415"]);
            }

            if (name == "GET /runs")
            {
                expected.Add("400");
            }

            if (name.Contains("/agents/"))
            {
                // A stop or follow-up that may have reached the provider, without an answer saying whether it was carried out.
                expected.AddRange(["502", "504"]);
            }

            foreach (var status in expected)
            {
                Assert.True(responses.ContainsKey(status), $"{name} lacks {status}");
                Assert.True(responses[status]!["content"]!.AsObject().ContainsKey("application/problem+json"), $"{name} {status}");
            }
        }

        Assert.Contains(operations, op => op.Name == "GET /runs");
        Assert.Contains(operations, op => op.Name == "POST /webhooks/cursor/{integrationId}");
    }

    [Fact]
    public async Task Openapi_body_schemas_offer_numbers_only_as_numbers_as_the_service_reads_them()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-numbers.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var schemas = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!.AsObject();

        // The readers refuse "456" for 456; a document offering strings would invite requests that are then refused.
        var numeric = schemas.SelectMany(schema => (schema.Value!["properties"]?.AsObject() ?? []).Select(property => (Name: $"{schema.Key}.{property.Key}", Type: property.Value!["type"])))
            .Where(property => property.Type?.ToJsonString() is { } type && (type.Contains("integer") || type.Contains("number")))
            .ToList();
        Assert.Contains(numeric, property => property.Name == "HandoffRequest.group_id");
        Assert.Contains(numeric, property => property.Name == "RunSnapshot.run_id");
        Assert.All(numeric, property => Assert.DoesNotContain("string", property.Type!.ToJsonString()));
    }

    [Fact]
    public async Task Openapi_document_states_the_limits_the_service_refuses_a_body_for()
    {
        // A client generated from the document must not send what is then a 400: the instruction and follow-up text
        // lengths (Handoff:MaxInstructionLength, as configured), and a run's ids, in range as everywhere else.
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-limits.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:MaxInstructionLength"] = "3000" })
            .WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var schemas = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!;

        Assert.Equal(3000, schemas["HandoffRequest"]!["properties"]!["instruction"]!["maxLength"]?.GetValue<int>());
        Assert.Equal(3000, schemas["FollowupRequest"]!["properties"]!["text"]!["maxLength"]?.GetValue<int>());
        // maxLength counts code points, the service UTF-16 units: the description says which, or 3000 emoji look fine.
        Assert.Contains("3000 UTF-16 code units", schemas["HandoffRequest"]!["properties"]!["instruction"]!["description"]?.GetValue<string>());
        Assert.Contains("3000 UTF-16 code units", schemas["FollowupRequest"]!["properties"]!["text"]!["description"]?.GetValue<string>());
        // An instruction of nothing visible is a 400, as a follow-up's text is: the same pattern and words.
        Assert.Equal(@"\S", schemas["HandoffRequest"]!["properties"]!["instruction"]!["pattern"]?.GetValue<string>());
        Assert.Contains("visible character", schemas["HandoffRequest"]!["properties"]!["instruction"]!["description"]?.GetValue<string>());
        foreach (var (schema, property) in new[] { ("RunSnapshot", "run_id"), ("RunSnapshot", "organization_id"), ("RunSnapshot", "project_id"), ("RunGroup", "id"), ("RunMetadata", "group_id"), ("AutomationHandoff", "integration_id") })
        {
            var id = schemas[schema]!["properties"]![property]!;
            Assert.True(id["minimum"]?.GetValue<long>() == 1, $"{schema}.{property}: no minimum 1");
            Assert.True(id["maximum"]?.GetValue<long>() == 9007199254740991, $"{schema}.{property}: no maximum 2^53 - 1");
        }

        Assert.Equal(1000, schemas["HandoffPreferences"]!["properties"]!["repositories"]!["maxItems"]?.GetValue<int>());
    }

    [Fact]
    public async Task Production_does_not_serve_it()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("prod.db"), cursor.Url);

        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().GetAsync("/openapi/v1.json")).StatusCode);
    }

    /// <summary>
    /// GET /runs and GET /runs/{runId}/handoff answer HEAD too; the document must still name each operation once
    /// (OpenAPI 3: operationId is unique among all operations), or client generators refuse it.
    /// </summary>
    [Fact]
    public async Task Openapi_document_names_every_operation_once_though_the_reads_answer_head_too()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-ids.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var paths = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!["paths"]!.AsObject();

        var operationIds = paths.SelectMany(path => path.Value!.AsObject())
            .Select(operation => operation.Value?["operationId"]?.GetValue<string>())
            .OfType<string>()
            .ToList();
        Assert.Contains("GetHandoff", operationIds);
        Assert.Contains("ListRecentRuns", operationIds);
        Assert.Equal(operationIds.Distinct().Count(), operationIds.Count);
    }

    /// <summary>
    /// The headers a client acts on are declared where the service sends them: the 202's Location (where to read the run),
    /// a 429's Retry-After (how long to wait) and a 401's WWW-Authenticate challenge. Undeclared, a generated client drops them.
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_location_retry_after_and_challenge_headers_the_answers_carry()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-headers.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:ApiToken"] = "openapi-token-0123456789",
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "1",
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "1",
            ["Handoff:Integrations:42:WebhookSecret"] = "openapi-webhook-secret-0123456789",
        }).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var anonymous = factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new("Bearer", "openapi-token-0123456789");
        var paths = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!;

        var accepted = await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(Payloads.Run(900, [], automation: false)));
        var limited = await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger());
        var unauthenticated = await anonymous.GetAsync("/runs");
        var unsigned = await anonymous.PostRawAsync("/webhooks/cursor/42?run_id=900", "{}");
        var webhookLimited = await anonymous.PostRawAsync("/webhooks/cursor/42?run_id=900", "{}");

        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        Assert.NotNull(accepted.Headers.Location);
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.NotNull(limited.Headers.RetryAfter);
        Assert.Equal(HttpStatusCode.Unauthorized, unauthenticated.StatusCode);
        Assert.NotEmpty(unauthenticated.Headers.WwwAuthenticate);
        Assert.Equal(HttpStatusCode.Unauthorized, unsigned.StatusCode);
        Assert.NotEmpty(unsigned.Headers.WwwAuthenticate);
        Assert.Equal(HttpStatusCode.TooManyRequests, webhookLimited.StatusCode);
        Assert.NotNull(webhookLimited.Headers.RetryAfter);

        static JsonNode? Header(JsonNode paths, string path, string status, string name) =>
            paths[path]!["post"]?["responses"]?[status]?["headers"]?[name] ?? paths[path]!["get"]?["responses"]?[status]?["headers"]?[name];

        var location = Header(paths, "/runs/{runId}/handoff", "202", "Location");
        Assert.True(location is not null, "202 of POST /runs/{runId}/handoff: no Location header");
        Assert.Equal("string", location!["schema"]!["type"]!.GetValue<string>());
        Assert.True(location["required"]!.GetValue<bool>()); // every 202 carries it
        foreach (var path in new[] { "/runs/{runId}/handoff", "/webhooks/cursor/{integrationId}" })
        {
            var retryAfter = Header(paths, path, "429", "Retry-After");
            Assert.True(retryAfter is not null, $"429 of POST {path}: no Retry-After header");
            Assert.Equal("integer", retryAfter!["schema"]!["type"]!.GetValue<string>());
            Assert.True(retryAfter["required"]!.GetValue<bool>());
            // Whole seconds, never 0: a client told 0 would resend at once, into the same full window.
            Assert.Equal(1, retryAfter["schema"]!["minimum"]!.GetValue<int>());
        }

        Assert.True(limited.Headers.RetryAfter!.Delta >= TimeSpan.FromSeconds(1));
        Assert.True(webhookLimited.Headers.RetryAfter!.Delta >= TimeSpan.FromSeconds(1));

        foreach (var (path, operation) in paths.AsObject().SelectMany(path => path.Value!.AsObject().Select(op => (path.Key, op.Value!))))
        {
            if (operation["responses"]!["401"] is { } unauthorized)
            {
                Assert.True(unauthorized["headers"]?["WWW-Authenticate"] is not null, $"401 of {path}: no WWW-Authenticate header");
            }
        }
    }

    /// <summary>
    /// What the service answers, checked against what the document declares for that operation and status: the status
    /// and media type are declared, and the body fits the schema (every property sent is declared, of its type, enum and
    /// nullability; every required one is sent). The API writes every property of its answers, null included, so each one
    /// is required, but for the problems' extensions named in <see cref="OptionalResponseProperties"/>.
    /// </summary>
    [Fact]
    public async Task Every_answer_fits_the_schema_the_document_declares_for_its_operation_and_status()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-answers.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var document = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
        cursor.Script("acme/bad", FakeCursor.Status(400));
        var answers = new List<(string Operation, HttpResponseMessage Response)>
        {
            ("post /runs/{runId}/handoff", await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(Payloads.Run(900, ["acme/ok", "acme/bad", "not a repo"], automation: false)))),
            ("post /runs/{runId}/handoff", await client.PostJsonAsync("/runs/901/handoff", Payloads.Trigger())),
            ("post /runs/{runId}/handoff", await client.PostRawAsync("/runs/900/handoff", "{}", "text/plain")),
            ("post /runs/{runId}/handoff", await client.PostRawAsync("/runs/900/handoff", "{\"group_id\": \"456\"}")),
            ("post /events/autofix-run-completed", await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(902, ["acme/ok"], automation: false))),
        };
        var agentId = cursor.Agents.Keys.Single();
        answers.Add(("post /runs/{runId}/agents/{agentId}/followup", await client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = "again" })));
        cursor.NextCommandAnswer = FakeCursor.Status(400);
        answers.Add(("post /runs/{runId}/agents/{agentId}/stop", await client.PostAsync($"/runs/900/agents/{agentId}/stop", null)));
        cursor.NextCommandAnswer = FakeCursor.Status(500);
        answers.Add(("post /runs/{runId}/agents/{agentId}/followup", await client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = "again" })));
        cursor.NextCommandAnswer = null;
        answers.Add(("post /runs/{runId}/agents/{agentId}/stop", await client.PostAsync($"/runs/900/agents/{agentId}/stop", null)));
        answers.Add(("get /runs/{runId}/handoff", await client.GetAsync("/runs/900/handoff")));
        answers.Add(("get /runs/{runId}/handoff", await client.GetAsync("/runs/900/handoff?group_id=7")));
        answers.Add(("get /runs", await client.GetAsync("/runs")));
        answers.Add(("get /runs", await client.GetAsync("/runs?limit=0")));

        var problems = new List<string>();
        var statuses = new HashSet<int>();
        foreach (var (operation, response) in answers)
        {
            var (method, path) = (operation[..operation.IndexOf(' ')], operation[(operation.IndexOf(' ') + 1)..]);
            var status = (int)response.StatusCode;
            statuses.Add(status);
            var where = $"{operation} {status}";
            var declared = document["paths"]![path]![method]!["responses"]![status.ToString(System.Globalization.CultureInfo.InvariantCulture)];
            var mediaType = response.Content.Headers.ContentType?.MediaType;
            if (declared?["content"]?[mediaType ?? string.Empty]?["schema"] is not { } schema)
            {
                problems.Add($"{where}: {mediaType} not declared");
                continue;
            }

            Conform(JsonNode.Parse(await response.Content.ReadAsStringAsync()), schema, document["components"]!["schemas"]!, where, problems);
        }

        // The answers above did reach the statuses they are meant to check.
        Assert.Superset(new HashSet<int> { 200, 202, 400, 404, 415, 502, 504 }, statuses);
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems.Distinct()));
    }

    /// <summary>Posts <paramref name="body"/> to integration 42's Cursor webhook for run 900, signed with <paramref name="secret"/>.</summary>
    private static async Task<HttpStatusCode> SendSignedWebhookAsync(HttpClient client, string secret, string body)
    {
        using var request = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=900", body, secret);
        return (await client.SendAsync(request)).StatusCode;
    }

    /// <summary>
    /// The webhook reads a body (a signed Cursor event naming the agent and its status); the document declared none, so
    /// a client generated from it (a relay, a replay tool) sent none and got a 400 every time.
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_webhook_body_the_service_requires()
    {
        const string secret = "openapi-webhook-secret-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-webhook.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = secret })
            .WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var operation = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!["/webhooks/cursor/{integrationId}"]!["post"]!;

        Task<HttpStatusCode> Send(string body) => SendSignedWebhookAsync(client, secret, body);

        Assert.Equal(HttpStatusCode.BadRequest, await Send(string.Empty));
        Assert.Equal(HttpStatusCode.BadRequest, await Send("""{"event":"statusChange","status":"FINISHED"}"""));
        Assert.Equal(HttpStatusCode.BadRequest, await Send("""{"event":"statusChange","id":"bc-1"}"""));
        Assert.Equal(HttpStatusCode.NoContent, await Send("""{"event":"statusChange","id":"bc-1","status":"FINISHED","source":{"repository":"github.com/acme/ok"},"target":{"prUrl":"https://github.com/acme/ok/pull/1"}}"""));

        var body = operation["requestBody"];
        Assert.True(body is not null, "the webhook declares no request body");
        Assert.True(body!["required"]?.GetValue<bool>() == true);
        var schema = body["content"]!["application/json"]!["schema"]!;
        // Required of a statusChange only: another event is answered 204 without them.
        var statusChange = Assert.Single(schema["oneOf"]!.AsArray(), branch => branch!["title"]?.GetValue<string>() == "statusChange")!;
        Assert.Equal(["id", "status"], statusChange["required"]!.AsArray().Select(r => r!.GetValue<string>()).Order());
        Assert.Equal(128, statusChange["properties"]!["id"]!["maxLength"]!.GetValue<int>());
        foreach (var property in new[] { "event", "summary", "source", "target" })
        {
            Assert.True(schema["properties"]![property] is not null, property);
        }
    }

    /// <summary>
    /// An agent id of a shape no provider gives is no agent of the run (a 404 unknown-agent); the document offered any
    /// string, so a client generated from it could not tell a mistyped id from one the run does not have. Its pattern
    /// also refuses "." and "..", as the service does (a path segment a client or proxy may resolve away).
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_agent_id_shape_the_agent_routes_take()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-agent-id.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var paths = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!;
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(Payloads.Run(900, ["acme/ok"], automation: false)))).StatusCode);
        var agentId = cursor.Agents.Keys.Single();
        var tooLong = new string('a', 129);

        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/runs/900/agents/{agentId}/stop", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync("/runs/900/agents/bad+id/stop", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync($"/runs/900/agents/{tooLong}/stop", null)).StatusCode);

        foreach (var path in new[] { "/runs/{runId}/agents/{agentId}/stop", "/runs/{runId}/agents/{agentId}/followup" })
        {
            var schema = paths[path]!["post"]!["parameters"]!.AsArray().Single(p => p!["name"]!.GetValue<string>() == "agentId")!["schema"]!;
            // As a client reads JSON Schema's pattern (ECMA-262): it takes exactly the ids the service does.
            var pattern = new System.Text.RegularExpressions.Regex(schema["pattern"]?.GetValue<string>() ?? string.Empty, System.Text.RegularExpressions.RegexOptions.ECMAScript);
            foreach (var candidate in new[] { agentId, "bad+id", ".", "..", "...", ".a", "a..b", "-", "bc_1.2", "a/b", "a b", "é" })
            {
                Assert.True(Core.Providers.AgentIds.IsValid(candidate) == pattern.IsMatch(candidate), candidate);
            }

            Assert.Matches(pattern, agentId);
            Assert.DoesNotMatch(pattern, "..");
            Assert.Equal(128, schema["maxLength"]?.GetValue<int>());
        }
    }

    /// <summary>
    /// The API takes a caller's credentials as the caller check in use wants them: Handoff:ApiToken as a bearer token,
    /// or in Dapr mode daprd's dapr-api-token header. The document named neither, so a client generated from it had no
    /// way to send the token and got a 401. The webhook, signed instead, wants neither; a loopback-only API takes none.
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_credentials_the_caller_check_in_use_wants()
    {
        const string token = "openapi-token-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-security.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:ApiToken"] = token })
            .WithWebHostBuilder(b => b.UseEnvironment("Development"));
        using var loopback = new EmbeddedServiceFactory(temp.File("openapi-security-loopback.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        await using var dapr = await DaprMode.DaprServiceFactory.StartAsync(cursor.Url, appApiToken: "openapi-app-token-0123456789");
        using var daprDevelopment = dapr.WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var document = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
        var daprDocument = JsonNode.Parse(await daprDevelopment.CreateClient().GetStringAsync("/openapi/v1.json"))!;

        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/runs")).StatusCode);
        client.DefaultRequestHeaders.Authorization = new("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs")).StatusCode);

        static void AssertDeclared(JsonNode document, string name, string type, Action<JsonNode> scheme)
        {
            var declared = document["components"]?["securitySchemes"]?[name];
            Assert.True(declared is not null, $"no {name} security scheme");
            Assert.Equal(type, declared!["type"]!.GetValue<string>());
            scheme(declared);
            foreach (var (path, operations) in document["paths"]!.AsObject())
            {
                foreach (var (method, operation) in operations!.AsObject())
                {
                    var required = operation!["security"]?.AsArray().SelectMany(requirement => requirement!.AsObject().Select(entry => entry.Key)).ToList() ?? [];
                    Assert.True(path.StartsWith("/webhooks/", StringComparison.Ordinal) ? required.Count == 0 : required.SequenceEqual([name]), $"{method} {path}: security {string.Join(", ", required)}");
                }
            }
        }

        AssertDeclared(document, "bearer", "http", scheme => Assert.Equal("bearer", scheme["scheme"]!.GetValue<string>()));
        AssertDeclared(daprDocument, "dapr-api-token", "apiKey", scheme =>
        {
            Assert.Equal("header", scheme["in"]!.GetValue<string>());
            Assert.Equal("dapr-api-token", scheme["name"]!.GetValue<string>());
        });
        var open = JsonNode.Parse(await loopback.CreateClient().GetStringAsync("/openapi/v1.json"))!;
        Assert.Null(open["components"]?["securitySchemes"]);
        Assert.All(open["paths"]!.AsObject().SelectMany(path => path.Value!.AsObject()), operation => Assert.Null(operation.Value!["security"]));

        // The refusals each check gives, on every operation behind it: a token check's 401 (a caller with the token
        // always passes), loopback-only's 403. Both were declared whatever the check.
        static void AssertRefusals(JsonNode document, string[] refusals)
        {
            foreach (var (path, operations) in document["paths"]!.AsObject().Where(path => !path.Key.StartsWith("/webhooks/", StringComparison.Ordinal)))
            {
                foreach (var (method, operation) in operations!.AsObject())
                {
                    var declared = operation!["responses"]!.AsObject().Select(response => response.Key).Where(status => status is "401" or "403");
                    Assert.True(declared.SequenceEqual(refusals), $"{method} {path}: {string.Join(", ", declared)}");
                }
            }
        }

        AssertRefusals(document, ["401"]);
        AssertRefusals(daprDocument, ["401"]);
        AssertRefusals(open, ["403"]);
    }

    /// <summary>
    /// In Dapr mode the dead-letter subscription's route is in the document too: it had no operationId and declared
    /// only the caller check's 401 and 403, not the SUCCESS reply it gives every dead letter (a generated client saw
    /// no answer it could succeed with) nor the drain's 503 that every other operation declares.
    /// </summary>
    [Fact]
    public async Task Openapi_document_in_dapr_mode_names_the_dead_letter_route_and_declares_its_reply()
    {
        await using var service = await DaprMode.DaprServiceFactory.StartAsync(cursor.Url);
        using var development = service.WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = development.CreateClient();
        var operation = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!["/events/autofix-run-completed/dead-letter"]!["post"]!;

        var answer = await client.PostRawAsync("/events/autofix-run-completed/dead-letter", "not a CloudEvent");

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal("SUCCESS", JsonNode.Parse(await answer.Content.ReadAsStringAsync())!["status"]!.GetValue<string>());
        Assert.Equal("AutofixRunCompletedDeadLetter", operation["operationId"]?.GetValue<string>());
        var responses = operation["responses"]!;
        Assert.Equal("#/components/schemas/DaprEventReply", responses["200"]?["content"]?["application/json"]?["schema"]?["$ref"]?.GetValue<string>());
        Assert.True(responses["503"]?["content"]?["application/problem+json"] is not null, "no 503 problem declared");
    }

    /// <summary>
    /// In Dapr mode the completion event's refusals are replies to daprd, DROP or RETRY in a 200, never the problems
    /// embedded mode answers; the document declared embedded mode's 400, 404, 408, 413 and 415 in both.
    /// </summary>
    [Fact]
    public async Task Openapi_document_in_dapr_mode_declares_no_event_problem_that_daprd_is_answered_in_a_reply_instead()
    {
        await using var service = await DaprMode.DaprServiceFactory.StartAsync(cursor.Url);
        using var development = service.WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = development.CreateClient();
        var responses = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!["/events/autofix-run-completed"]!["post"]!["responses"]!.AsObject();

        foreach (var (body, contentType) in new[] { ("not json", "application/json"), ("{}", "text/plain"), ("""{"run_id":920}""", "application/json") })
        {
            var answer = await client.PostRawAsync("/events/autofix-run-completed", body, contentType);
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            Assert.Equal("DROP", JsonNode.Parse(await answer.Content.ReadAsStringAsync())!["status"]!.GetValue<string>());
        }

        // No caller check without APP_API_TOKEN: neither a 401 nor a 403.
        Assert.Equal(["200", "503"], responses.Select(response => response.Key).Order());
    }

    /// <summary>
    /// A compressed body is a 415 whose Accept-Encoding says what is taken (identity), as RFC 9110 §15.5.16 asks; the
    /// document declared no such header, so a generated client dropped it. Only that 415 carries it: not required.
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_accept_encoding_a_415_for_a_compressed_body_carries()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-encoding.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var paths = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!.AsObject();
        using var compressed = new HttpRequestMessage(HttpMethod.Post, "/runs/900/handoff") { Content = new StringContent("{}", System.Text.Encoding.UTF8, "application/json") };
        compressed.Content.Headers.ContentEncoding.Add("gzip");

        var answer = await client.SendAsync(compressed);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, answer.StatusCode);
        Assert.Equal("identity", answer.Headers.GetValues("Accept-Encoding").Single());
        var declared = paths.SelectMany(path => path.Value!.AsObject().Select(op => (Name: $"{op.Key} {path.Key}", Responses: op.Value!["responses"]!)))
            .Where(op => op.Responses["415"] is not null).ToList();
        Assert.Equal(4, declared.Count); // the trigger, the follow-up, the completion event and the webhook
        foreach (var (name, responses) in declared)
        {
            var header = responses["415"]!["headers"]?["Accept-Encoding"];
            Assert.True(header is not null, $"415 of {name}: no Accept-Encoding header");
            Assert.True(header!["required"]?.GetValue<bool>() is null or false, $"415 of {name}: Accept-Encoding required");
        }
    }

    /// <summary>
    /// The event reply's status is what a sender switches on (daprd's pub/sub contract): SUCCESS, RETRY or DROP in Dapr
    /// mode, only SUCCESS in embedded mode, which refuses with a problem. The document said only "a string".
    /// </summary>
    [Fact]
    public async Task Openapi_document_names_the_event_replies_each_mode_gives()
    {
        using var embedded = new EmbeddedServiceFactory(temp.File("openapi-reply.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        await using var dapr = await DaprMode.DaprServiceFactory.StartAsync(cursor.Url);
        using var daprDevelopment = dapr.WithWebHostBuilder(b => b.UseEnvironment("Development"));

        static async Task<string[]> Replies(HttpClient client) =>
            JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!["DaprEventReply"]!["properties"]!["status"]!["enum"]?
                .AsArray().Select(value => value!.GetValue<string>()).Order().ToArray() ?? [];

        var dropped = await daprDevelopment.CreateClient().PostRawAsync("/events/autofix-run-completed", "not json");
        Assert.Equal("DROP", JsonNode.Parse(await dropped.Content.ReadAsStringAsync())!["status"]!.GetValue<string>());
        Assert.Equal(["DROP", "RETRY", "SUCCESS"], await Replies(daprDevelopment.CreateClient()));
        Assert.Equal(["SUCCESS"], await Replies(embedded.CreateClient()));
    }

    /// <summary>
    /// The webhook is authenticated by its X-Webhook-Signature header alone, which the handler reads from the request:
    /// the document declared no such parameter, so a client generated from it (a relay, a replay tool) sent none and
    /// got a 401 every time.
    /// </summary>
    [Fact]
    public async Task Openapi_document_declares_the_signature_header_the_webhook_requires()
    {
        const string secret = "openapi-webhook-secret-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-signature.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = secret })
            .WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var operation = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["paths"]!["/webhooks/cursor/{integrationId}"]!["post"]!;
        const string body = """{"event":"agentCreated"}""";

        Assert.Equal(HttpStatusCode.Unauthorized, (await client.PostRawAsync("/webhooks/cursor/42?run_id=900", body)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, await SendSignedWebhookAsync(client, secret, body));

        var header = operation["parameters"]?.AsArray()
            .SingleOrDefault(p => p!["in"]?.GetValue<string>() == "header" && p["name"]?.GetValue<string>() == "X-Webhook-Signature");
        Assert.True(header is not null, "the webhook declares no X-Webhook-Signature header");
        Assert.True(header!["required"]?.GetValue<bool>() == true);
        Assert.Equal("string", header["schema"]!["type"]!.GetValue<string>());
        var pattern = new System.Text.RegularExpressions.Regex(header["schema"]!["pattern"]!.GetValue<string>());
        Assert.Matches(pattern, HandoffDapr.Core.Providers.WebhookSignature.Sign(secret, System.Text.Encoding.UTF8.GetBytes(body)));
        Assert.DoesNotMatch(pattern, "sha256=abc");
    }

    /// <summary>
    /// Only a <c>statusChange</c> (or unnamed) event needs an agent id and a status; another event is answered 204 and
    /// ignored, whatever else it carries. The document required <c>id</c> and <c>status</c> (and the id's shape) of every
    /// body, so a client generated from it (a relay, a replay tool) refused to pass on the events the service accepts.
    /// Each body is sent, signed, to the service and checked against the document's schema: what is answered 204 fits it,
    /// what is answered 400 does not.
    /// </summary>
    [Fact]
    public async Task Openapi_webhook_body_schema_accepts_the_other_events_the_service_accepts_and_refuses_what_it_refuses()
    {
        const string secret = "openapi-webhook-secret-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-webhook-events.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = secret })
            .WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var document = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
        var schema = document["paths"]!["/webhooks/cursor/{integrationId}"]!["post"]!["requestBody"]!["content"]!["application/json"]!["schema"]!;

        Task<HttpStatusCode> Send(string body) => SendSignedWebhookAsync(client, secret, body);

        var problems = new List<string>();
        foreach (var body in new[]
        {
            """{"event":"agentCreated"}""",
            """{"event":"agentDeleted","summary":"gone","source":{"repository":"github.com/acme/ok"}}""",
            """{"event":"somethingNew","id":"not an agent id","status":"WHATEVER"}""",
            """{"event":"statusChange","id":"bc-1","status":"FINISHED","source":{"repository":"github.com/acme/ok"}}""",
            """{"id":"bc-1","status":"RUNNING","source":{"repository":"github.com/acme/ok"}}""",
        })
        {
            Assert.Equal(HttpStatusCode.NoContent, await Send(body));
            var errors = new List<string>();
            Conform(JsonNode.Parse(body), schema, document["components"]!["schemas"]!, body, errors, "CursorWebhookEvent", request: true);
            problems.AddRange(errors);
        }

        foreach (var body in new[]
        {
            """{"event":"statusChange","status":"FINISHED"}""",
            """{"event":"statusChange","id":"bc-1"}""",
            """{"event":"statusChange","id":"not an agent id","status":"FINISHED"}""",
            """{"status":"FINISHED"}""",
        })
        {
            Assert.Equal(HttpStatusCode.BadRequest, await Send(body));
            var errors = new List<string>();
            Conform(JsonNode.Parse(body), schema, document["components"]!["schemas"]!, body, errors, "CursorWebhookEvent", request: true);
            if (errors.Count == 0)
            {
                problems.Add($"{body}: answered 400, but fits the document's schema");
            }
        }

        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems.Distinct()));
    }

    /// <summary>
    /// A run, as a completion event or a trigger's <c>run</c>, must name its group (<c>group.id</c> or
    /// <c>metadata.group_id</c>), or it is a 400; the document let a run of only <c>run_id</c> through.
    /// </summary>
    [Fact]
    public async Task Openapi_document_requires_a_run_to_name_its_group_as_the_service_does()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-group.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var snapshot = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!["RunSnapshot"]!;

        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostRawAsync("/events/autofix-run-completed", """{"run_id":910}""")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostJsonAsync("/runs/911/handoff", Payloads.Trigger(new JsonObject { ["run_id"] = 911 }))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostRawAsync("/events/autofix-run-completed", """{"run_id":912,"group":{"id":456}}""")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostRawAsync("/events/autofix-run-completed", """{"run_id":913,"metadata":{"group_id":456}}""")).StatusCode);

        // One of two ways: group.id, or metadata.group_id.
        var ways = snapshot["anyOf"]?.AsArray();
        Assert.True(ways is not null, "RunSnapshot does not require a group");
        Assert.Equal(2, ways!.Count);
        Assert.Contains(ways, way => way!["required"]![0]!.GetValue<string>() == "group" && way["properties"]!["group"]!["required"]![0]!.GetValue<string>() == "id");
        Assert.Contains(ways, way => way!["required"]![0]!.GetValue<string>() == "metadata" && way["properties"]!["metadata"]!["required"]![0]!.GetValue<string>() == "group_id");
    }

    /// <summary>A follow-up of spaces only is a 400; the document, asking only for one character, offered it as valid.</summary>
    [Fact]
    public async Task Openapi_document_refuses_a_followup_text_of_spaces_as_the_service_does()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi-followup.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        var text = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!["FollowupRequest"]!["properties"]!["text"]!;
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(Payloads.Run(900, ["acme/ok"], automation: false)))).StatusCode);
        var agentId = cursor.Agents.Keys.Single();

        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = "   " })).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = " x " })).StatusCode);

        var pattern = new System.Text.RegularExpressions.Regex(text["pattern"]?.GetValue<string>() ?? string.Empty);
        Assert.DoesNotMatch(pattern, "   ");
        Assert.Matches(pattern, " x ");
        Assert.Contains("visible character", text["description"]!.GetValue<string>());
    }

    /// <summary>
    /// The schema checker the tests above rely on finds each kind of misfit it looks for, behind a <c>$ref</c> as every
    /// answer's schema is: a checker that skipped the reference, or one of its rules, would let every answer through.
    /// </summary>
    [Theory]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1.5}""", null)]
    [InlineData("""{"id":"1","state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1.5}""", "Thing.id is string, declared integer")]
    [InlineData("""{"id":1,"state":"shut","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1.5}""", "Thing.state \"shut\" is not one of [\"open\",\"closed\"]")]
    [InlineData("""{"id":1,"state":"open","at":"yesterday","name":"ab","tags":["t"],"choice":1.5}""", "Thing.at yesterday is not an RFC 3339 date-time")]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"","tags":["t"],"choice":1.5}""", "Thing.name is shorter than 1")]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"abcd","tags":["t"],"choice":1.5}""", "Thing.name is longer than 3")]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":[1],"choice":1.5}""", "Thing.tags[] is integer, declared string")]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1}""", "Thing.choice fits more than one of oneOf")]
    [InlineData("""{"state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1.5}""", "Thing.id is required but not sent")]
    [InlineData("""{"id":1,"state":"open","at":"2026-01-01T00:00:00Z","name":"ab","tags":["t"],"choice":1.5,"more":1}""", "Thing.more is sent but not declared")]
    [InlineData("""{"note":"x"}""", "Loose.note is declared optional, but the API writes every property it has")]
    public void Schema_checker_finds_each_kind_of_misfit_behind_a_reference(string answer, string? problem)
    {
        var components = JsonNode.Parse("""
            {
              "Thing": {
                "type": "object",
                "required": ["id", "state", "at", "name", "tags", "choice"],
                "properties": {
                  "id": { "type": "integer" },
                  "state": { "type": "string", "enum": ["open", "closed"] },
                  "at": { "type": "string", "format": "date-time" },
                  "name": { "type": "string", "minLength": 1, "maxLength": 3 },
                  "tags": { "type": "array", "items": { "type": "string" } },
                  "choice": { "oneOf": [{ "type": "integer" }, { "type": "number" }] }
                }
              },
              "Loose": { "type": "object", "properties": { "note": { "type": "string" } } }
            }
            """)!;
        var component = answer.Contains("note", StringComparison.Ordinal) ? "Loose" : "Thing";
        var problems = new List<string>();

        Conform(JsonNode.Parse(answer), new JsonObject { ["$ref"] = $"#/components/schemas/{component}" }, components, "answer", problems);

        Assert.Equal(problem is null ? [] : [$"answer: {problem}"], problems);
    }

    /// <summary>The only properties an answer may leave out: a problem's trace (not in one written while shutting down) and its <c>failure_type</c> (only a provider's failure has one).</summary>
    private static readonly HashSet<string> OptionalResponseProperties = ["ProblemDetails.trace_id", "ProblemDetails.failure_type"];

    /// <summary>
    /// Checks <paramref name="value"/> against <paramref name="schema"/>. An answer (<paramref name="request"/> false) must
    /// carry every property declared; a request may leave optional ones out. A <c>oneOf</c> beside other keywords is
    /// checked with them, its branches as added constraints (<paramref name="branch"/>: a property a branch does not name
    /// is not undeclared, the schema around it declares it).
    /// </summary>
    private static void Conform(JsonNode? value, JsonNode schema, JsonNode components, string where, List<string> problems, string? name = null, bool request = false, bool branch = false)
    {
        if (schema["$ref"]?.GetValue<string>() is { } reference)
        {
            var component = reference[(reference.LastIndexOf('/') + 1)..];
            Conform(value, components[component]!, components, where, problems, component, request);
            return;
        }

        if (schema["oneOf"] is JsonArray choices)
        {
            var alongside = schema["type"] is not null || schema["properties"] is not null;
            var fits = choices.Select(choice =>
            {
                var errors = new List<string>();
                Conform(value, choice!, components, where, errors, name, request, branch: alongside);
                return errors;
            }).ToList();
            if (fits.All(errors => errors.Count > 0))
            {
                problems.AddRange(fits.OrderBy(errors => errors.Count).First());
            }
            else if (fits.Count(errors => errors.Count == 0) > 1)
            {
                problems.Add($"{where}: {name} fits more than one of oneOf");
            }

            if (!alongside)
            {
                return;
            }
        }

        if (schema["not"] is { } excluded)
        {
            var errors = new List<string>();
            Conform(value, excluded, components, where, errors, name, request, branch: true);
            if (errors.Count == 0)
            {
                problems.Add($"{where}: {name} {value?.ToJsonString()} fits what it must not: {excluded.ToJsonString()}");
            }
        }

        var kind = value switch
        {
            null => "null",
            JsonObject => "object",
            JsonArray => "array",
            JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.String => "string",
            JsonValue v when v.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False => "boolean",
            _ => value.ToJsonString().Contains('.') ? "number" : "integer",
        };
        var types = schema["type"] switch
        {
            JsonArray list => list.Select(type => type!.GetValue<string>()).ToList(),
            JsonValue type => [type.GetValue<string>()],
            _ => null,
        };
        if (types is not null && !types.Contains(kind) && !(kind == "integer" && types.Contains("number")))
        {
            problems.Add($"{where}: {name} is {kind}, declared {string.Join("|", types)}");
            return;
        }

        if (schema["enum"] is JsonArray values && !values.Any(v => JsonNode.DeepEquals(v, value)))
        {
            problems.Add($"{where}: {name} {value?.ToJsonString()} is not one of {values.ToJsonString()}");
        }

        if (schema["format"]?.GetValue<string>() == "date-time" && kind == "string"
            && !System.Text.RegularExpressions.Regex.IsMatch(value!.GetValue<string>(), @"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"))
        {
            problems.Add($"{where}: {name} {value} is not an RFC 3339 date-time");
        }

        if (kind == "string")
        {
            var text = value!.GetValue<string>();
            var length = text.EnumerateRunes().Count();
            if (schema["minLength"]?.GetValue<int>() is { } min && length < min)
            {
                problems.Add($"{where}: {name} is shorter than {min}");
            }

            if (schema["maxLength"]?.GetValue<int>() is { } max && length > max)
            {
                problems.Add($"{where}: {name} is longer than {max}");
            }

            if (schema["pattern"]?.GetValue<string>() is { } pattern && !System.Text.RegularExpressions.Regex.IsMatch(text, pattern))
            {
                problems.Add($"{where}: {name} {value.ToJsonString()} does not match {pattern}");
            }
        }

        if (value is JsonObject obj)
        {
            var properties = schema["properties"]?.AsObject();
            var required = schema["required"]?.AsArray().Select(r => r!.GetValue<string>()).ToHashSet() ?? [];
            foreach (var missing in required.Where(property => !obj.ContainsKey(property)))
            {
                problems.Add($"{where}: {name}.{missing} is required but not sent");
            }

            foreach (var optional in properties?.Select(p => p.Key).Where(p => !request && !required.Contains(p) && !OptionalResponseProperties.Contains($"{name}.{p}")) ?? [])
            {
                problems.Add($"{where}: {name}.{optional} is declared optional, but the API writes every property it has");
            }

            foreach (var (property, inner) in obj)
            {
                if (properties?[property] is { } declared)
                {
                    Conform(inner, declared, components, where, problems, $"{name}.{property}", request);
                }
                else if (schema["additionalProperties"] is JsonObject additional)
                {
                    Conform(inner, additional, components, where, problems, $"{name}[{property}]", request);
                }
                else if (!branch)
                {
                    problems.Add($"{where}: {name}.{property} is sent but not declared");
                }
            }
        }
        else if (value is JsonArray array && schema["items"] is { } items)
        {
            foreach (var item in array)
            {
                Conform(item, items, components, where, problems, $"{name}[]", request);
            }
        }
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
