using System.Text.RegularExpressions;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// What the status page makes of what <c>GET /runs</c> answers, in headless Chromium against a stand-in for it: values
/// from the API (ultimately from a provider or a run's snapshot) shown as text only, links only to http(s) addresses, the
/// token kept out of every address, and an answer that is not a list of runs taken as a failure.
/// </summary>
public sealed class StatusPageRenderingTests : IDisposable
{
    private const string RunsJson = RunsAnswer.OneRunJson;
    private readonly TempDirectory temp = new();

    [Fact]
    public async Task Status_page_shows_markup_in_every_value_from_the_api_as_text()
    {
        // Markup in each value the page shows: a cell, a status, a failure, an agent's id as a link's text and as plain
        // text, a refusal, a pull request that is not a link, and (next refresh) a problem's detail.
        const string runs = """
            [{"run_id":"<b class=\"injected\">run</b>","group_id":"<b class=\"injected\">group</b>",
              "launches":[
                {"repository":"<b class=\"injected\">repository</b>","phase":"launched","generation":1,"agent_id":"a1","failure_type":"<b class=\"injected\">failure</b>"},
                {"repository":"acme/two","phase":"in_flight","generation":1,"agent_id":"<b class=\"injected\">agent-id</b>"}],
              "coding_agents":{"a1":{"id":"<b class=\"injected\">agent</b>","status":"<b class=\"injected\">status</b>","agent_url":"https://cursor.test/agents/a1",
                "results":[{"pr_url":"mailto:<b class=\"injected\">pull-request</b>"}]}},
              "refused":[{"repository":"<b class=\"injected\">refused</b>","failure_type":"<b class=\"injected\">why</b>"}]}]
            """;
        using var standIn = new RunsStandIn(call => call == 1
            ? RunsAnswer.Json(runs)
            : new RunsAnswer(503, """{"status":503,"detail":"<b class=\"injected\">detail</b>"}""", "application/problem+json", null));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 7000);

        Assert.DoesNotContain("<b class=\"injected\">", dom);
        foreach (var value in new[] { "run", "group", "repository", "failure", "agent-id", "agent", "status", "pull-request", "refused", "why", "detail" })
        {
            Assert.Contains($"&lt;b class=\"injected\"&gt;{value}&lt;/b&gt;", dom);
        }
    }

    [Fact]
    public async Task Status_page_links_only_http_addresses_and_opens_them_without_an_opener_or_referrer()
    {
        // A javascript: or data: address (a compromised provider, a leaked webhook secret, an older store) is shown as
        // text, including one that has an http address further on; an agent's pull request is the result that has one.
        const string runs = """
            [{"run_id":1,"group_id":7,"launches":[
                {"repository":"acme/a","phase":"launched","generation":1,"agent_id":"a1"},
                {"repository":"acme/b","phase":"launched","generation":1,"agent_id":"a2"},
                {"repository":"acme/c","phase":"launched","generation":1,"agent_id":"a3"}],
              "coding_agents":{
                "a1":{"id":"a1","status":"completed","agent_url":"javascript:alert(document.domain)//https://cursor.com/a1","results":[{"pr_url":"javascript:alert(1)//https://github.com/acme/a/pull/1"}]},
                "a2":{"id":"a2","status":"completed","agent_url":"data:text/html,https://cursor.com","results":[{"pr_url":"JaVaScRiPt:alert(2)"}]},
                "a3":{"id":"a3","status":"completed","agent_url":"https://cursor.com/agents/a3","results":[{"summary":"no pull request"},{"pr_url":"https://github.com/acme/c/pull/3"}]}}}]
            """;
        using var standIn = new RunsStandIn(_ => RunsAnswer.Json(runs));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 3000);

        Assert.Equal(2, Regex.Count(dom, "<a "));
        Assert.Contains("<a href=\"https://cursor.com/agents/a3\" rel=\"noopener noreferrer\" target=\"_blank\">a3</a>", dom);
        Assert.Contains("<a href=\"https://github.com/acme/c/pull/3\" rel=\"noopener noreferrer\" target=\"_blank\">acme/c/pull/3</a>", dom);
        Assert.Contains("<td>javascript:alert(1)//https://github.com/acme/a/pull/1</td>", dom);
        Assert.Contains("<td>JaVaScRiPt:alert(2)</td>", dom);
        Assert.Contains("<td>a1</td>", dom);
        Assert.Contains("<td>a2</td>", dom);
    }

    [Fact]
    public async Task Status_page_labels_each_launch_by_its_agent_or_else_its_phase_and_a_run_without_any_as_no_handoff()
    {
        // A repository launched twice (its second launch named), a launch waiting for its retry (its phase as words,
        // with why), one with an agent (the agent's status), one whose agent id is also the name of an object's
        // property ("constructor": still no agent, so its phase), and a run with no launch and no refusal.
        const string runs = """
            [{"run_id":2,"group_id":7,"refused":[],"launches":[
                {"repository":"acme/a","phase":"retry_scheduled","generation":1,"failure_type":"provider_unavailable"},
                {"repository":"acme/a","phase":"launched","generation":2,"agent_id":"a2"},
                {"repository":"acme/b","phase":"in_flight","generation":1,"agent_id":"constructor"}],
              "coding_agents":{"a2":{"id":"a2","status":"running"}}},
             {"run_id":3,"group_id":7,"launches":[],"refused":[]}]
            """;
        using var standIn = new RunsStandIn(_ => RunsAnswer.Json(runs));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 3000);

        Assert.Contains("<td>acme/a</td><td>—</td><td><span class=\"status retry_scheduled\">retry scheduled</span><div class=\"phase\">provider_unavailable</div></td>", dom);
        Assert.Contains("<td>acme/a (launch 2)</td><td>a2</td><td><span class=\"status running\">running</span></td>", dom);
        Assert.Contains("<td>acme/b</td><td>constructor</td><td><span class=\"status in_flight\">in flight</span></td>", dom);
        Assert.Contains("<td>3</td><td>7</td><td>—</td><td>—</td><td>no handoff</td>", dom);
        Assert.Single(Regex.Matches(dom, "no handoff"));
    }

    [Fact]
    public async Task Status_page_sends_its_token_only_in_the_authorization_header_keeps_it_out_of_the_address_and_for_this_tab_only()
    {
        // Given percent-encoded in the address, as a link maker writes a base64 token's "/", "+" and "=".
        const string token = "rendering-test-token/0123456789+=";
        // After the page's script: what it left in the address and in storage that outlives the tab.
        using var standIn = new RunsStandIn(_ => RunsAnswer.Json(RunsJson), new Dictionary<string, (string, string)>
        {
            ["/ui/token-state.html"] = ("", """
                <script>
                  setTimeout(() => {
                    document.body.dataset.address = location.href;
                    document.body.dataset.kept = String(localStorage.length);
                  }, 1000);
                </script>
                """),
        });

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/token-state.html#token={Uri.EscapeDataString(token)}", budgetMs: 7000);

        Assert.Contains("acme/privaterepo", dom);
        Assert.Contains($"data-address=\"{standIn.Address}ui/token-state.html\"", dom);
        Assert.Contains("data-kept=\"0\"", dom);
        Assert.DoesNotContain(standIn.Requests, request => request.PathAndQuery.Contains("0123456789", StringComparison.Ordinal));
        var reads = standIn.Requests.Where(request => request.PathAndQuery.StartsWith("/runs", StringComparison.Ordinal)).ToList();
        Assert.All(reads, request => Assert.Equal("/runs?limit=50", request.PathAndQuery));
        Assert.All(reads, request => Assert.Equal($"Bearer {token}", request.Authorization));
        // The first read and the one 5 s later: a refresh every 5 s, not more often.
        Assert.Equal(2, reads.Count);
    }

    [Fact]
    public async Task Status_page_given_a_token_in_its_form_hides_the_form_empties_the_field_and_goes_on_refreshing()
    {
        // Refused without a token; the person types one at 1 s; the runs then change from one read to the next.
        using var standIn = new RunsStandIn(call => call switch
        {
            1 => new RunsAnswer(401, null, null, "Bearer"),
            2 => RunsAnswer.Json(RunsJson.Replace("acme/privaterepo", "acme/first", StringComparison.Ordinal)),
            _ => RunsAnswer.Json(RunsJson.Replace("acme/privaterepo", "acme/second", StringComparison.Ordinal)),
        }, new Dictionary<string, (string, string)>
        {
            ["/ui/token-form.html"] = ("", """
                <script>
                  setTimeout(() => {
                    document.getElementById("token").value = "typed-token";
                    document.getElementById("token-form").dispatchEvent(new Event("submit", { cancelable: true }));
                    document.body.dataset.fieldAfterSending = document.getElementById("token").value;
                  }, 1000);
                </script>
                """),
        });

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/token-form.html", budgetMs: 7000);

        // Typed into a password field: not shown to whoever looks at the screen.
        Assert.Contains("<input id=\"token\" type=\"password\"", dom);
        // Each read's runs in place of the last one's, not added to them.
        Assert.Contains("acme/second", dom);
        Assert.DoesNotContain("acme/first", dom);
        Assert.Contains("<form id=\"token-form\" hidden=\"\">", dom);
        Assert.Contains("data-field-after-sending=\"\"", dom);
        var reads = standIn.Requests.Where(request => request.PathAndQuery.StartsWith("/runs", StringComparison.Ordinal)).ToList();
        Assert.Null(reads[0].Authorization);
        Assert.All(reads.Skip(1), request => Assert.Equal("Bearer typed-token", request.Authorization));
    }

    [Fact]
    public async Task Status_page_whose_token_was_refused_does_not_call_the_runs_it_cleared_not_current_when_the_next_read_fails()
    {
        // Runs read with a token; refused at the next refresh (the rows cleared); a new token sent from the form at 6 s,
        // and the service then fails: there are no runs on the page to call "not current".
        using var standIn = new RunsStandIn(call => call switch
        {
            1 => RunsAnswer.Json(RunsJson),
            2 => new RunsAnswer(401, null, null, "Bearer"),
            _ => new RunsAnswer(503, null, null, null),
        }, new Dictionary<string, (string, string)>
        {
            ["/ui/token-refused.html"] = ("", """
                <script>
                  setTimeout(() => {
                    document.getElementById("token").value = "new-token";
                    document.getElementById("token-form").dispatchEvent(new Event("submit", { cancelable: true }));
                  }, 6000);
                </script>
                """),
        });

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/token-refused.html#token=old-token", budgetMs: 8000);

        Assert.Equal(3, standIn.Calls);
        Assert.Contains("Could not load runs (HTTP 503).", dom);
        Assert.DoesNotContain("acme/privaterepo", dom);
        Assert.DoesNotContain("not current", dom);
    }

    [Theory]
    [InlineData("""{"message":"not a list"}""")]
    [InlineData("null")]
    [InlineData("\"not a list\"")]
    [InlineData("[null]")]
    [InlineData("""[{"run_id":9,"launches":[{"repository":"acme/x"}]}]""")]
    public async Task Status_page_keeps_its_rows_when_the_service_then_answers_something_that_is_not_a_list_of_runs(string body)
    {
        using var standIn = new RunsStandIn(call => RunsAnswer.Json(call == 1 ? RunsJson : body));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 7000);

        // As for a failed request: the rows stay (a passing failure should not blank the page) and read as not current.
        Assert.Contains("Could not load runs (", dom);
        Assert.Contains("acme/privaterepo", dom);
        Assert.Contains("not current", dom);
        Assert.DoesNotContain("acme/x", dom);
    }

    [Fact]
    public async Task Status_page_clears_the_failure_message_once_the_service_answers_again()
    {
        using var standIn = new RunsStandIn(call => call == 1
            ? new RunsAnswer(503, """{"status":503,"detail":"The list of recent runs could not be read."}""", "application/problem+json", null)
            : RunsAnswer.Json(RunsJson));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 7000);

        Assert.Contains("acme/privaterepo", dom);
        Assert.Contains(">Updated ", dom);
        Assert.DoesNotContain("Could not load runs", dom);
    }

    [Fact]
    public async Task Status_page_asking_for_a_token_after_a_failure_no_longer_shows_the_failure()
    {
        using var standIn = new RunsStandIn(call => call == 1
            ? new RunsAnswer(503, """{"status":503,"detail":"The list of recent runs could not be read."}""", "application/problem+json", null)
            : new RunsAnswer(401, null, null, "Bearer"));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 7000);

        Assert.Contains("needs its API token", dom);
        Assert.DoesNotContain("Could not load runs", dom);
    }

    [Fact]
    public async Task Status_page_that_could_not_load_any_runs_says_so_and_not_that_it_is_loading()
    {
        using var standIn = new RunsStandIn(_ => new RunsAnswer(503, null, null, null));

        var dom = await RunChromium($"--dump-dom {standIn.Address}ui/index.html", budgetMs: 3000);

        // In an alert, which a screen reader announces as it appears.
        Assert.Contains("<div id=\"error\" role=\"alert\">Could not load runs (HTTP 503).</div>", dom);
        Assert.DoesNotContain("Loading", dom);
        // Nor a token form, which nothing asked for.
        Assert.Contains("<form id=\"token-form\" hidden=\"\">", dom);
    }

    private Task<string> RunChromium(string arguments, int budgetMs) =>
        HeadlessChromium.RunAsync(arguments, temp.File("chromium-" + Guid.NewGuid().ToString("N")), budgetMs);

    public void Dispose() => temp.Dispose();
}
