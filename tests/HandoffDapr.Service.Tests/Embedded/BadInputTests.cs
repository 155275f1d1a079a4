using Microsoft.AspNetCore.Hosting;
using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>A client's mistake is a 4xx problem, never a 500, and nothing reaches the provider.</summary>
public sealed class BadInputTests : IClassFixture<BadInputTests.Service>
{
    private readonly Service service;

    public BadInputTests(Service service) => this.service = service;

    public static TheoryData<string, string> MalformedTriggerBodies => new()
    {
        { "/runs/1/handoff", "{" },
        { "/runs/1/handoff", "" },
        { "/runs/1/handoff", "null" },
        { "/runs/1/handoff", "[]" },
        { "/runs/1/handoff", "\"text\"" },
        { "/runs/1/handoff", """{"group_id":"456","integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456.5,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":99999999999999999999999,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456}""" },
        { "/runs/1/handoff", """{"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":-1,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":0,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"auto_create_pr":"yes"}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":2}}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":1,"preferences":{"repositories":"acme/shop"}}}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":[1,2]}""" },
        { "/runs/0/handoff", """{"group_id":456,"integration_id":42}""" },
        { "/runs/-5/handoff", """{"group_id":456,"integration_id":42}""" },
        { "/runs/99999999999999999999999/handoff", """{"group_id":456,"integration_id":42}""" },
        { "/runs/abc/handoff", """{"group_id":456,"integration_id":42}""" },
        // Past 2^53 - 1: daprd keeps actor state numbers as float64, so such an id would come back changed.
        { "/runs/9007199254740992/handoff", """{"group_id":456,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":9007199254740992,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":9223372036854775807}""" },
        { "/events/autofix-run-completed", """{"run_id":9007199254740992,"group":{"id":456}}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":9007199254740992}}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"metadata":{"group_id":9007199254740992}}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"project_id":9007199254740992}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"organization_id":-1}""" },
        // The automation's integration id is kept in the run's state as every other id: past 2^53 - 1 it would come back changed.
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"preferences":{"automation_handoff":{"integration_id":9007199254740992}}}""" },
        // Two different groups: which one owns the run (and whose triggers it takes) would be a guess.
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"metadata":{"group_id":457}}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":1,"group":{"id":456},"metadata":{"group_id":457}}}""" },
        // A top-level property name that is a lone surrogate escape: well-formed JSON text, invalid as a string.
        { "/events/autofix-run-completed", """{"\ud800":1,"run_id":5,"group":{"id":456}}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"\udc00x":1}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","dat\ud800":1,"data":{"run_id":5,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", "{" },
        { "/events/autofix-run-completed", "[]" },
        { "/events/autofix-run-completed", """{"run_id":"x"}""" },
        { "/events/autofix-run-completed", """{"run_id":0}""" },
        { "/events/autofix-run-completed", """{"run_id":-3}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":"g"}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":"not an object"}""" },
        // Content after the CloudEvent (a second one): the snapshot is read from inside the envelope, so the envelope's
        // reader alone sees what follows it.
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}}}{"specversion":"1.0","data":{"run_id":6,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}}} x""" },
        // data and data_base64 are one or the other (CloudEvents' JSON format), refused together though each alone is a
        // valid snapshot (data_base64 decodes to {"run_id":5,"group":{"id":456}}); base64 that is not.
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}},"data_base64":"eyJydW5faWQiOjUsImdyb3VwIjp7ImlkIjo0NTZ9fQ=="}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data_base64":"not base64!"}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data_base64":{"run_id":5}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data_base64":"WzEsMl0="}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"artifacts":{"root_cause":{"five_whys":{"a":1}}}}""" },
    };

    [Theory]
    [MemberData(nameof(MalformedTriggerBodies))]
    public async Task Malformed_body_is_a_4xx_problem(string path, string body)
    {
        var response = await service.Client.PostRawAsync(path, body);

        Assert.InRange((int)response.StatusCode, 400, 499);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await AssertStillHealthy();
    }

    public static TheoryData<string, string> BodiesNamingAPropertyTwice => new()
    {
        { "/runs/1/handoff", """{"group_id":1,"group_id":456,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456,"GROUP_ID":1,"integration_id":42}""" },
        { "/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":1,"group":{"id":456},"run_id":1}}""" },
        { "/runs/1/agents/bc-1/followup", """{"text":"a","text":"b"}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"run_id":6,"group":{"id":456}}""" },
        { "/events/autofix-run-completed", """{"run_id":5,"group":{"id":1,"id":456}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}},"data":{"run_id":6,"group":{"id":456}}}""" },
        // The envelope's names in another letter case are the same names too (the snapshot's reader ignores case).
        { "/events/autofix-run-completed", """{"specversion":"1.0","DATA":{"run_id":6,"group":{"id":456}},"data":{"run_id":5,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}},"Data":{"run_id":6,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","data_base64":"eyJydW5faWQiOjUsImdyb3VwIjp7ImlkIjo0NTZ9fQ==","Data_Base64":"eyJydW5faWQiOjYsImdyb3VwIjp7ImlkIjo0NTZ9fQ=="}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","SpecVersion":"1.0","data":{"run_id":5,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","TraceParent":"x","data":{"run_id":5,"group":{"id":456}}}""" },
        // ... and so are they written with escapes, every character of the longest one included.
        { "/events/autofix-run-completed", """{"specversion":"1.0","\u0044ATA":{"run_id":6,"group":{"id":456}},"data":{"run_id":5,"group":{"id":456}}}""" },
        { "/events/autofix-run-completed", """{"specversion":"1.0","\u0064\u0061\u0074\u0061\u005f\u0062\u0061\u0073\u0065\u0036\u0034":"eyJydW5faWQiOjUsImdyb3VwIjp7ImlkIjo0NTZ9fQ==","DATA_BASE64":"eyJydW5faWQiOjYsImdyb3VwIjp7ImlkIjo0NTZ9fQ=="}""" },
    };

    [Theory]
    [MemberData(nameof(BodiesNamingAPropertyTwice))]
    public async Task Body_naming_a_property_twice_is_a_400_problem_not_read_last_wins(string path, string body)
    {
        // Last-wins would let a proxy or log that reads the first value see another run or group than the service uses.
        var response = await service.Client.PostRawAsync(path, body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        // The detail names the cause among others: it said "not valid JSON" (or "not a run snapshot") of valid JSON.
        Assert.Contains("named twice", (await response.ReadJsonAsync())["detail"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("?limit=abc")]
    [InlineData("?limit=99999999999")]
    [InlineData("?limit=0")]
    [InlineData("?limit=201")]
    [InlineData("?limit=5&limit=6")]
    [InlineData("?limit=")]
    public async Task Recent_runs_limit_that_is_not_1_to_200_is_a_400_problem(string query)
    {
        var response = await service.Client.GetAsync("/runs" + query);
        using var development = service.InDevelopment();
        var developmentResponse = await development.GetAsync("/runs" + query);

        Assert.Equal(HttpStatusCode.BadRequest, developmentResponse.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    /// <summary>1 and 200 are the bounds of the limit taken, not the first values refused.</summary>
    [Theory]
    [InlineData("?limit=1")]
    [InlineData("?limit=200")]
    public async Task Recent_runs_limit_of_1_or_200_is_taken(string query)
    {
        var response = await service.Client.GetAsync("/runs" + query);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.NotNull(await response.ReadJsonArrayAsync());
    }

    [Theory]
    [InlineData("/runs/1/handoff?group_id=456&group_id=999", "group_id")]
    [InlineData("/runs/1/handoff?group_id=456&group_id=456", "group_id")]
    [InlineData("/runs?limit=5&limit=6", "limit")]
    public async Task Query_parameter_given_twice_is_a_400_problem_saying_so(string pathAndQuery, string name)
    {
        // The two values were read joined ("456,999") and answered "group_id must be a positive whole number".
        var response = await service.Client.GetAsync(pathAndQuery);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal($"{name} must be given once.", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("/runs?limit=5%00")]
    [InlineData("/runs?limit=5%00%00%00")]
    [InlineData("/runs/1/handoff?group_id=456%00")]
    public async Task Number_in_the_query_followed_by_nul_characters_is_a_400_problem_not_read_as_the_number(string pathAndQuery)
    {
        // .NET's number parsing takes trailing NULs for the end of the text: "5\0" read as 5.
        var response = await service.Client.GetAsync(pathAndQuery);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    /// <summary>
    /// A run id in the path that names no run this service could hold (zero, past 2^53 - 1) is the caller's mistake, a 400
    /// saying so: not a 404 that would send the caller looking for a run that is missing.
    /// </summary>
    [Theory]
    [InlineData("GET", "/runs/0/handoff")]
    [InlineData("GET", "/runs/9007199254740992/handoff")]
    [InlineData("POST", "/runs/0/handoff")]
    [InlineData("POST", "/runs/9007199254740992/handoff")]
    [InlineData("POST", "/runs/0/agents/bc-1/stop")]
    [InlineData("POST", "/runs/abc/agents/bc-1/stop")]
    [InlineData("POST", "/runs/9007199254740992/agents/bc-1/followup")]
    public async Task Run_id_out_of_range_in_the_path_is_a_400_problem_not_an_unknown_run(string method, string path)
    {
        var response = method == "GET" ? await service.Client.GetAsync(path)
            : await service.Client.PostJsonAsync(path, path.EndsWith("/handoff", StringComparison.Ordinal) ? Payloads.Trigger() : new JsonObject { ["text"] = "Add a test" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/invalid-request", problem["type"]!.GetValue<string>());
        // As a body's ids are told: 9007199254740992 was refused without the bound it is past.
        Assert.Equal("The run id must be a positive whole number (at most 9007199254740991).", problem["detail"]!.GetValue<string>());
    }

    /// <summary>A group_id in the query past 2^53 - 1 is told the bound, as the trigger body's group_id is.</summary>
    [Fact]
    public async Task Group_id_out_of_range_in_the_query_is_a_400_naming_the_bound()
    {
        var response = await service.Client.GetAsync("/runs/1/handoff?group_id=9007199254740992");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("group_id must be a positive whole number (at most 9007199254740991).", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    /// <summary>
    /// docs/api.md tells the two 400 types apart by whether the body reads as JSON of the expected shape: an id that is no
    /// 64-bit whole number as written (a string, a fraction or exponent, past the 64-bit range) is a type error, one that
    /// is but lies outside 1 to 2^53 - 1 is a value out of range.
    /// </summary>
    [Theory]
    [InlineData("\"456\"", "invalid-body")]
    [InlineData("456.0", "invalid-body")]
    [InlineData("4.56e2", "invalid-body")]
    [InlineData("99999999999999999999", "invalid-body")]
    [InlineData("0", "invalid-request")]
    [InlineData("-1", "invalid-request")]
    [InlineData("9007199254740992", "invalid-request")]
    [InlineData("9223372036854775807", "invalid-request")]
    public async Task Group_id_not_a_whole_number_as_written_is_invalid_body_and_one_out_of_range_is_invalid_request(string groupId, string type)
    {
        var body = "{\"group_id\":" + groupId + ",\"integration_id\":42}";

        var response = await service.Client.PostRawAsync("/runs/1/handoff", body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.EndsWith("/" + type, (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    /// <summary>
    /// An integration id outside 1 to 2^53 - 1 is the caller's value out of range, as a group id is: a 400, not the
    /// 404 unknown-integration (or unknown-run) of an id that could be configured.
    /// </summary>
    [Theory]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("9007199254740992")]
    [InlineData("9223372036854775807")]
    public async Task Integration_id_out_of_range_is_invalid_request_not_an_unknown_integration(string integrationId)
    {
        var body = "{\"group_id\":456,\"integration_id\":" + integrationId + "}";

        var response = await service.Client.PostRawAsync("/runs/1/handoff", body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/invalid-request", problem["type"]!.GetValue<string>());
        Assert.Contains("integration_id", problem["detail"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    /// <summary>
    /// A JSON text sent over a network carries no byte order mark (RFC 8259, 8.1); one that does is refused as unreadable,
    /// as docs/api.md says, rather than read on some routes and not on others.
    /// </summary>
    [Theory]
    [InlineData("/runs/1/handoff", """{"group_id":456,"integration_id":42}""")]
    [InlineData("/events/autofix-run-completed", """{"run_id":5,"group":{"id":456}}""")]
    [InlineData("/events/autofix-run-completed", """{"specversion":"1.0","data":{"run_id":5,"group":{"id":456}}}""")]
    public async Task Body_starting_with_a_byte_order_mark_is_invalid_body(string path, string body)
    {
        var response = await service.Client.PostRawAsync(path, "\ufeff" + body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.EndsWith("/invalid-body", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    /// <summary>An agent id of a shape no provider gives, on a valid run id, is no agent of the run: 404, as for a missing one.</summary>
    [Theory]
    [InlineData("/runs/1/agents/bc%201/stop")]
    [InlineData("/runs/1/agents/..%2Fetc/followup")]
    public async Task Agent_id_of_no_providers_shape_is_an_unknown_agent(string path)
    {
        var response = await service.Client.PostJsonAsync(path, new JsonObject { ["text"] = "Add a test" });

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.EndsWith("/unknown-agent", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    /// <summary>
    /// A CloudEvent with neither data nor data_base64 was read as the snapshot itself and refused with "run_id must be a
    /// positive whole number", of an event that names no run_id at all.
    /// </summary>
    [Fact]
    public async Task Cloud_event_without_data_is_a_400_problem_saying_it_carries_no_data()
    {
        var body = """{"specversion":"1.0","id":"e3","source":"x","type":"t"}""";

        var response = await service.Client.PostRawAsync("/events/autofix-run-completed", body, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/invalid-body", problem["type"]!.GetValue<string>());
        Assert.Equal("The event carries no data: a CloudEvent's run snapshot is its data or data_base64.", problem["detail"]!.GetValue<string>());
    }

    /// <summary>
    /// A CloudEvent whose data_base64 is not base64 is refused saying so, not read as if it had no data_base64: the
    /// envelope itself would then be the snapshot, and one carrying run_id and group at its top level would be taken.
    /// </summary>
    [Fact]
    public async Task Cloud_event_whose_data_base64_is_not_base64_is_a_400_even_when_its_envelope_reads_as_a_snapshot()
    {
        var body = """{"specversion":"1.0","id":"e4","data_base64":"not base64!","run_id":5,"group":{"id":456}}""";

        var response = await service.Client.PostRawAsync("/events/autofix-run-completed", body, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/invalid-body", problem["type"]!.GetValue<string>());
        Assert.Equal("The event's data_base64 is not base64.", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Cloud_event_nested_deeper_than_32_outside_its_data_is_a_400_problem()
    {
        // The snapshot's reader allows depth 32; the envelope around it must not allow more.
        var deep = new string('[', 40) + new string(']', 40);
        var body = """{"specversion":"1.0","x":""" + deep + ""","data":{"run_id":5,"group":{"id":456}}}""";

        var response = await service.Client.PostRawAsync("/events/autofix-run-completed", body, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    /// <summary>An empty body is told so, not that it "cannot be read" as JSON of the wrong type or with a name twice.</summary>
    [Theory]
    [InlineData("/runs/1/handoff")]
    [InlineData("/runs/1/agents/bc-1/followup")]
    [InlineData("/events/autofix-run-completed")]
    public async Task Empty_body_is_an_invalid_body_problem_saying_it_is_empty(string path)
    {
        var response = await service.Client.PostRawAsync(path, string.Empty);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-body", problem["type"]!.GetValue<string>());
        Assert.Equal("The body is empty.", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Deeply_nested_json_is_a_4xx_problem()
    {
        var body = "{\"group_id\":456,\"integration_id\":42,\"run\":" + new string('[', 5000) + new string(']', 5000) + "}";

        var response = await service.Client.PostRawAsync("/runs/1/handoff", body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        await AssertStillHealthy();
    }

    [Fact]
    public async Task Oversize_body_is_413()
    {
        var instruction = new string('x', 2 * 1024 * 1024);
        var response = await service.Client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(instruction: instruction));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        await AssertStillHealthy();
    }

    [Fact]
    public async Task Instruction_longer_than_4096_characters_is_rejected()
    {
        var response = await service.Client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/shop"]), instruction: new string('x', 4097)));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("at most 4096 characters", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    /// <summary>
    /// A trigger's instruction of nothing an agent could read was taken (202) and put into the prompt, while a follow-up's
    /// text of the same was a 400: the instruction, when given, is held to the follow-up's rule.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("\u0000")]
    [InlineData("   \u200b")]
    [InlineData("\u2028\u00a0\u0007")]
    [InlineData("\ufeff\u200d")]
    public async Task Instruction_of_no_visible_text_is_a_400_and_nothing_is_launched(string instruction)
    {
        var response = await service.Client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/shop"]), instruction: instruction));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/invalid-request", problem["type"]!.GetValue<string>());
        Assert.Contains("visible character", problem["detail"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    [Fact]
    public async Task Oversize_body_is_a_body_too_large_problem_naming_the_limit()
    {
        var response = await service.Client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(instruction: new string('x', 2 * 1024 * 1024)));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/body-too-large", problem["type"]!.GetValue<string>());
        Assert.Equal("Request body too large", problem["title"]!.GetValue<string>());
        Assert.Equal(413, problem["status"]!.GetValue<int>());
        Assert.Equal("The body may be at most 1048576 bytes.", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Where_an_unreadable_body_failed_names_the_clients_property_bounded_not_whole()
    {
        // The JSON path is built from the client's own property names: a long one must not make the detail as long.
        var name = new string('p', 500);

        var detail = await DetailOfBodyUnreadableAfterPropertyAsync(name);

        Assert.Contains(" at ", detail, StringComparison.Ordinal);
        Assert.Contains("…", detail, StringComparison.Ordinal);
        Assert.DoesNotContain(name, detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Where_an_unreadable_body_failed_is_named_whole_when_it_is_exactly_as_long_as_the_bound()
    {
        // "$." and a 78-character name: a path of 80 characters, the most named whole (no "…" that says something was cut).
        var name = new string('p', 78);

        Assert.Contains($" at $.{name}: ", await DetailOfBodyUnreadableAfterPropertyAsync(name), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Where_an_unreadable_body_failed_is_cut_when_it_is_one_character_longer_than_the_bound()
    {
        // "$." and a 79-character name: a path of 81 characters.
        var name = new string('p', 79);

        var detail = await DetailOfBodyUnreadableAfterPropertyAsync(name);

        Assert.Contains("…", detail, StringComparison.Ordinal);
        Assert.DoesNotContain(name, detail, StringComparison.Ordinal);
    }

    /// <summary>The 400's detail for a trigger whose JSON breaks inside the value of a property of the given name.</summary>
    private async Task<string> DetailOfBodyUnreadableAfterPropertyAsync(string name)
    {
        var response = await service.Client.PostRawAsync("/runs/1/handoff", "{\"group_id\":456,\"integration_id\":42,\"" + name + "\":[1,}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        return (await response.ReadJsonAsync())["detail"]!.GetValue<string>();
    }

    [Theory]
    [InlineData("/runs/1/handoff")]
    [InlineData("/events/autofix-run-completed")]
    [InlineData("/runs/1/agents/bc-1/followup")]
    public async Task Non_json_content_type_is_a_415_problem_of_our_own_type(string path)
    {
        var response = await service.Client.PostRawAsync(path, "group_id=456", "application/x-www-form-urlencoded");

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/unsupported-media-type", problem["type"]!.GetValue<string>());
        Assert.Equal("Unsupported media type", problem["title"]!.GetValue<string>());
        Assert.Equal(415, problem["status"]!.GetValue<int>());
    }

    [Theory]
    [InlineData("application/json-patch+json")]
    [InlineData("application/jsonl")]
    [InlineData("application/json; charset=utf-16")]
    [InlineData("text/json; charset=iso-8859-1")]
    public async Task Json_look_alike_or_a_charset_other_than_utf8_is_a_415_not_a_parse_error(string contentType)
    {
        foreach (var path in new[] { "/runs/1/handoff", "/events/autofix-run-completed", "/runs/1/agents/bc-1/followup" })
        {
            var response = await service.Client.PostRawAsync(path, """{"group_id":456,"integration_id":42}""", contentType);

            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            Assert.Equal("https://handoff-dapr.dev/problems/unsupported-media-type", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        }

        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    [Theory]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("application/json; charset=\"UTF-8\"")]
    [InlineData("application/json; charset=utf8")]
    [InlineData("application/json; v=1")]
    [InlineData("Application/JSON")]
    [InlineData("application/cloudevents+json; charset=utf-8")]
    [InlineData("text/json")]
    public async Task Json_with_or_without_a_utf8_charset_is_read(string contentType)
    {
        var response = await service.Client.PostRawAsync("/runs/9/handoff", """{"group_id":456,"integration_id":42}""", contentType);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    /// <summary>A request without a Content-Type is read as JSON (<c>JsonBody.MediaTypes</c>): only a named type other than JSON is a 415.</summary>
    [Fact]
    public async Task Json_without_a_content_type_is_read()
    {
        var content = new ByteArrayContent("""{"group_id":456,"integration_id":42}"""u8.ToArray());
        Assert.Null(content.Headers.ContentType);

        var response = await service.Client.PostAsync("/runs/9/handoff", content);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("identity")]
    [InlineData(" IDENTITY ")]
    [InlineData("  ")]
    public async Task Body_with_the_identity_or_a_blank_content_encoding_is_read_as_uncompressed(string encoding)
    {
        // identity means no coding at all (RFC 9110 §8.4.1): it is the one Accept-Encoding names on a 415. A blank value
        // names no coding either.
        var request = new HttpRequestMessage(HttpMethod.Post, "/runs/9/handoff")
        {
            Content = new StringContent("""{"group_id":456,"integration_id":42}""", System.Text.Encoding.UTF8, "application/json"),
        };
        request.Content.Headers.TryAddWithoutValidation("Content-Encoding", encoding);

        var response = await service.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("gzip")]
    [InlineData("br")]
    public async Task Compressed_body_is_a_415_problem_naming_the_encoding_as_unsupported(string encoding)
    {
        foreach (var path in new[] { "/runs/1/handoff", "/events/autofix-run-completed", "/runs/1/agents/bc-1/followup" })
        {
            var content = new StringContent("""{"group_id":456,"integration_id":42}""", System.Text.Encoding.UTF8, "application/json");
            content.Headers.ContentEncoding.Add(encoding);

            var response = await service.Client.PostAsync(path, content);

            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            var problem = await response.ReadJsonAsync();
            Assert.Equal("https://handoff-dapr.dev/problems/unsupported-content-encoding", problem["type"]!.GetValue<string>());
            Assert.Equal("Unsupported content encoding", problem["title"]!.GetValue<string>());
            Assert.Equal("identity", response.Headers.GetValues("Accept-Encoding").Single());
        }
    }

    [Theory]
    [InlineData("""{"group_id":456,"integration_id":42,"run":{"run_id":8}}""")]
    [InlineData("""{"group_id":456,"integration_id":42,"run":{"run_id":8,"group":{"id":457}}}""")]
    public async Task Trigger_whose_run_names_no_group_or_another_one_is_a_400_not_an_unknown_run(string body)
    {
        var response = await service.Client.PostRawAsync("/runs/8/handoff", body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task Unknown_run_detail_names_only_what_the_request_named_and_is_the_same_for_another_groups_run()
    {
        // Found following the runbook: GET /runs/124/handoff, without group_id, answered "No run with this id belongs
        // to the given group", though no group was given.
        await service.Client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(60, ["acme/shop"], automation: false));

        async Task<string> Detail(Task<HttpResponseMessage> request)
        {
            var response = await request;
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            var problem = await response.ReadJsonAsync();
            Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", problem["type"]!.GetValue<string>());
            return problem["detail"]!.GetValue<string>();
        }

        var readWithoutGroup = await Detail(service.Client.GetAsync("/runs/61/handoff"));
        var readMissing = await Detail(service.Client.GetAsync("/runs/61/handoff?group_id=456"));
        var readOtherGroup = await Detail(service.Client.GetAsync("/runs/60/handoff?group_id=999"));
        var triggerMissing = await Detail(service.Client.PostJsonAsync("/runs/61/handoff", Payloads.Trigger()));
        var triggerOtherGroup = await Detail(service.Client.PostJsonAsync("/runs/60/handoff", Payloads.Trigger(groupId: 999)));

        Assert.DoesNotContain("group", readWithoutGroup, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(readMissing, readOtherGroup);
        Assert.Equal(triggerMissing, triggerOtherGroup);
        Assert.Contains("run", triggerMissing[triggerMissing.IndexOf('.')..], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("GET", "/runs/1", "text/html", 404)]
    [InlineData("PUT", "/runs/1/handoff", "text/html", 405)]
    [InlineData("GET", "/runs/1", "application/xml", 404)]
    [InlineData("POST", "/runs/1/handoff", "text/plain", 415)]
    public async Task Routing_refusals_are_problem_json_whatever_the_client_accepts(string method, string path, string accept, int status)
    {
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Accept.Add(new System.Net.Http.Headers.MediaTypeWithQualityHeaderValue(accept));
        if (status == 415)
        {
            request.Content = new StringContent("x", System.Text.Encoding.UTF8, "text/plain");
        }

        var response = await service.Client.SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.StartsWith("https://handoff-dapr.dev/problems/", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("PUT", "/runs/1/handoff", 405, "method-not-allowed")]
    [InlineData("DELETE", "/healthz", 405, "method-not-allowed")]
    [InlineData("DELETE", "/readyz", 405, "method-not-allowed")]
    [InlineData("POST", "/readyz", 405, "method-not-allowed")]
    [InlineData("GET", "/runs/1", 404, "not-found")]
    public async Task Routing_refusals_are_problems_of_our_own_type(string method, string path, int status, string type)
    {
        var response = await service.Client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal($"https://handoff-dapr.dev/problems/{type}", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    /// <summary>
    /// A status the framework sets with no body and no problem of ours to match (the status page's files refusing a range
    /// past their end, or a failed If-Match) keeps its status and is our problem JSON, named for that status: not turned
    /// into a 400 "invalid request", nor an empty answer.
    /// </summary>
    [Theory]
    [InlineData("Range", "bytes=99999999-", 416, "Range Not Satisfiable")]
    [InlineData("If-Match", "\"no-such-etag\"", 412, "Precondition Failed")]
    public async Task Bare_status_set_by_the_framework_is_a_problem_named_for_that_status(string header, string value, int status, string title)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "/ui/app.js");
        request.Headers.TryAddWithoutValidation(header, value);

        var response = await service.Client.SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.ReadJsonAsync();
        Assert.Equal($"https://handoff-dapr.dev/problems/http-{status}", problem["type"]!.GetValue<string>());
        Assert.Equal(title, problem["title"]!.GetValue<string>());
        Assert.Equal(status, problem["status"]!.GetValue<int>());
    }

    [Theory]
    [InlineData(null)]
    [InlineData(0L)]
    [InlineData(-1L)]
    public async Task Completion_event_naming_no_usable_group_is_a_400_not_an_unknown_run(long? groupId)
    {
        var run = Payloads.Run(7, ["acme/shop"]);
        run.Remove("group");
        run["metadata"]!.AsObject().Remove("group_id");
        if (groupId is { } id)
        {
            run["group"] = new JsonObject { ["id"] = id };
        }

        var response = await service.Client.PostJsonAsync("/events/autofix-run-completed", run);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-body", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task More_than_a_thousand_repository_entries_is_a_400_problem()
    {
        var repositories = Enumerable.Range(0, 1001).Select(i => $"acme/repo{i}").ToArray();

        var response = await service.Client.PostJsonAsync("/runs/3/handoff", Payloads.Trigger(Payloads.Run(3, repositories)));
        var eventResponse = await service.Client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(4, repositories));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, eventResponse.StatusCode);
        Assert.Equal("run.preferences.repositories may list at most 1000 entries.", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal("preferences.repositories may list at most 1000 entries.", (await eventResponse.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    /// <summary>
    /// An event's top-level property name escaping a lone surrogate is well-formed JSON whose name is no text: told so,
    /// not "not valid JSON", which sent its sender looking for a syntax error.
    /// </summary>
    [Theory]
    [InlineData("""{"\ud800":1,"run_id":5,"group":{"id":456}}""")]
    [InlineData("""{"run_id":5,"group":{"id":456},"\udc00x":1}""")]
    public async Task Event_with_a_property_name_that_is_no_text_is_told_so(string body)
    {
        var response = await service.Client.PostRawAsync("/events/autofix-run-completed", body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(
            "The body cannot be read: a property name is not valid text (it escapes a lone surrogate, such as \\ud800).",
            (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    /// <summary>
    /// A snapshot's refusal names the field where the body has it: a trigger's snapshot is its run, and was told of an
    /// "organization_id" or "group.id" its body does not have at the top (where group_id is the trigger's own).
    /// </summary>
    [Theory]
    [InlineData("/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":1,"group":{"id":456},"organization_id":-1}}""",
        "run.organization_id must be a positive whole number (at most 9007199254740991).")]
    [InlineData("/runs/1/handoff", """{"group_id":456,"integration_id":42,"run":{"run_id":1,"group":{"id":456},"metadata":{"group_id":457}}}""",
        "run.group.id and run.metadata.group_id name different groups.")]
    [InlineData("/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"organization_id":-1}""",
        "organization_id must be a positive whole number (at most 9007199254740991).")]
    [InlineData("/events/autofix-run-completed", """{"run_id":5,"group":{"id":456},"metadata":{"group_id":457}}""",
        "group.id and metadata.group_id name different groups.")]
    public async Task Snapshot_refusal_names_the_field_as_the_body_has_it(string path, string body, string detail)
    {
        var response = await service.Client.PostRawAsync(path, body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(detail, (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    /// <summary>SnapshotRules.MaxRepositoryEntries is the longest list taken, not the first one refused.</summary>
    [Fact]
    public async Task Exactly_a_thousand_repository_entries_is_taken()
    {
        var repositories = Enumerable.Range(0, 1000).Select(i => $"acme/repo{i}").ToArray();

        var eventResponse = await service.Client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(6, repositories, automation: false));

        Assert.Equal(HttpStatusCode.OK, eventResponse.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await service.Client.GetAsync("/runs/6/handoff")).StatusCode);
    }

    [Theory]
    [InlineData("acme/..")]
    [InlineData("../etc")]
    [InlineData("acme/sh op")]
    [InlineData("https://github.com/acme/shop")]
    [InlineData("acme/shop\u0000")]
    [InlineData("acme/shop\r\nX-Injected: 1")]
    [InlineData("acme/shop/extra")]
    [InlineData("-acme/shop")]
    [InlineData("acme")]
    public async Task Invalid_repository_name_fails_that_repository_without_a_provider_call(string repository)
    {
        var runId = 1000 + Math.Abs(repository.GetHashCode() % 100000);
        var run = Payloads.Run(runId, [repository], automation: false);

        var response = await service.Client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(run));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var failure = Assert.Single((await response.ReadJsonAsync())["failures"]!.AsArray())!;
        Assert.Equal("invalid_repository", failure["failure_type"]!.GetValue<string>());
        Assert.DoesNotContain('\u0000', failure["error_message"]!.GetValue<string>());
        Assert.DoesNotContain('\n', failure["error_message"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    [Fact]
    public async Task Base_branch_that_git_would_refuse_fails_without_a_provider_call()
    {
        var run = Payloads.Run(5000, ["acme/shop"], automation: false);
        run["preferences"]!["repositories"]![0]!["branch_name"] = "main..evil";

        var response = await service.Client.PostJsonAsync("/runs/5000/handoff", Payloads.Trigger(run));

        Assert.Equal("invalid_repository", (await response.ReadJsonAsync())["failures"]![0]!["failure_type"]!.GetValue<string>());
        Assert.Equal(0, service.Cursor.LaunchRequests);
    }

    [Fact]
    public async Task Recent_runs_when_the_store_cannot_be_read_is_a_503_problem_not_a_500()
    {
        using var temp = new TempDirectory();
        using var cursor = new FakeCursor();
        using var factory = new EmbeddedServiceFactory(temp.File("broken.db"), cursor.Url);
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs")).StatusCode);
        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={factory.DataPath};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "ALTER TABLE runs RENAME TO runs_gone";
            await command.ExecuteNonQueryAsync();
        }

        var response = await client.GetAsync("/runs");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unavailable", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    private async Task AssertStillHealthy() =>
        Assert.Equal(HttpStatusCode.OK, (await service.Client.GetAsync("/healthz")).StatusCode);

    public sealed class Service : IDisposable
    {
        private readonly TempDirectory temp = new();
        private readonly EmbeddedServiceFactory factory;

        public Service()
        {
            factory = new EmbeddedServiceFactory(temp.File("handoff.db"), Cursor.Url);
            Client = factory.CreateClient();
        }

        public FakeCursor Cursor { get; } = new();

        public HttpClient Client { get; }

        /// <summary>The same service in the Development environment, where ASP.NET Core throws on a binding failure instead of answering 400.</summary>
        public HttpClient InDevelopment() => factory.WithWebHostBuilder(builder => builder.UseEnvironment("Development")).CreateClient();

        public void Dispose()
        {
            Client.Dispose();
            factory.Dispose();
            Cursor.Dispose();
            temp.Dispose();
        }
    }
}
