using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>The status page in a real browser: headless Chromium (Debian's package; .ci/run installs it) against the running service.</summary>
public sealed class StatusPageTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Status_page_lists_runs_with_agent_status_and_pull_request_link()
    {
        Assert.True(File.Exists(HeadlessChromium.Path), "Chromium is required: apt-get install chromium (.ci/run does this)");
        await using var service = await ServiceProcess.StartAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = temp.File("ui.db"),
            ["Handoff__Integrations__42__BaseUrl"] = cursor.Url,
            ["Handoff__Integrations__42__ApiKey"] = "ui-test-key",
            ["Handoff__Integrations__43__ApiKey"] = "ui-test-token",
            ["Handoff__Launch__PollInterval"] = "00:00:00.500",
            ["Handoff__Embedded__SchedulePollInterval"] = "00:00:00.200",
        });
        using var client = new HttpClient { BaseAddress = service.Address };
        await client.PostJsonAsync("/runs/880/handoff", Payloads.Trigger(Payloads.Run(880, ["acme/shop", "acme/web"], automation: false)));
        var shop = cursor.Agents.Values.Single(agent => agent["source"]!["repository"]!.GetValue<string>().EndsWith("/shop", StringComparison.Ordinal));
        cursor.SetStatus(shop["id"]!.GetValue<string>(), "FINISHED", prUrl: "https://github.com/acme/shop/pull/5");
        await WaitUntilCompleted(client, shop["id"]!.GetValue<string>());

        var screenshot = Path.Combine(AppContext.BaseDirectory, "status-page.png");
        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html");
        await RunChromium($"--window-size=1100,500 --screenshot={screenshot} {service.Address}ui/index.html");

        Assert.Contains("acme/shop", dom);
        Assert.Contains("acme/web", dom);
        Assert.Contains("href=\"https://github.com/acme/shop/pull/5\"", dom);
        Assert.Contains(">completed<", dom);
        Assert.Contains(">pending<", dom);
        Assert.DoesNotContain("Could not load runs", dom);

        // The screenshot is a real PNG of the requested size with content (a blank page compresses to almost nothing).
        var png = await File.ReadAllBytesAsync(screenshot);
        Assert.Equal([0x89, 0x50, 0x4E, 0x47], png[..4]);
        Assert.Equal(1100, BigEndian(png, 16));
        Assert.Equal(500, BigEndian(png, 20));
        Assert.True(png.Length > 8_000, $"the screenshot is only {png.Length} bytes");
    }

    [Fact]
    public async Task Status_page_marks_a_launch_that_failed_without_an_agent_as_failed_like_a_failed_agent()
    {
        const string token = "status-page-failed-launch-token-0123456789";
        cursor.Script("acme/denied", FakeCursor.Status(403));
        await using var service = await StartWithTokenAsync(token, "acme/denied");

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={token}");

        // The provider refused the repository (repository_access): no agent, the launch itself failed.
        Assert.Contains("repository_access", dom);
        Assert.Contains("<span class=\"status failed\">failed</span>", dom);
    }

    [Fact]
    public async Task Status_page_shows_a_repository_refused_before_any_launch_with_why_and_a_printable_name()
    {
        const string token = "status-page-refused-repository-token-0123456789";
        await using var service = await StartWithTokenAsync(token, "\u202eevil/r");

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={token}");

        Assert.Contains(">?evil/r<", dom);
        Assert.Contains("<span class=\"status failed\">not launched</span>", dom);
        Assert.Contains("invalid_repository", dom);
        Assert.DoesNotContain("no handoff", dom);
        Assert.DoesNotContain("\u202e", dom);
    }

    [Fact]
    public async Task Status_page_of_a_service_with_an_api_token_asks_for_it_and_lists_runs_once_given()
    {
        const string token = "status-page-test-token-0123456789";
        await using var service = await StartWithTokenAsync(token, "acme/shop");

        var withoutToken = await RunChromium($"--dump-dom {service.Address}ui/index.html");
        var wrongToken = await RunChromium($"--dump-dom {service.Address}ui/index.html#token=not-the-token");
        var withToken = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={token}");

        Assert.Contains("needs its API token", withoutToken);
        Assert.DoesNotContain("acme/shop", withoutToken);
        Assert.Contains("token was refused", wrongToken);
        Assert.DoesNotContain("acme/shop", wrongToken);
        Assert.Contains("acme/shop", withToken);
        Assert.DoesNotContain("Could not load runs", withToken);
    }

    [Fact]
    public async Task Status_page_still_says_the_token_was_refused_after_its_next_refreshes()
    {
        await using var service = await StartWithTokenAsync("status-page-refused-token-0123456789", "acme/shop");

        // Two refresh periods (5 s each) after the refusal: nothing the user did since, so the message must not change.
        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token=not-the-token", budgetMs: 12_000);

        Assert.Contains("token was refused", dom);
        Assert.DoesNotContain("acme/shop", dom);
    }

    [Fact]
    public async Task Status_page_refused_as_not_loopback_says_what_the_service_answered()
    {
        Assert.True(File.Exists(HeadlessChromium.Path), "Chromium is required: apt-get install chromium (.ci/run does this)");
        await using var service = await ServiceProcess.StartAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = temp.File("loopback.db"),
            ["Handoff__Integrations__42__BaseUrl"] = cursor.Url,
            ["Handoff__Integrations__42__ApiKey"] = "ui-test-key",
            ["Handoff__Integrations__43__ApiKey"] = "ui-test-token",
        });

        // No Handoff:ApiToken: the API takes loopback names only, and a browser that reached the page by another name
        // is refused with a 403 whose detail says what to configure.
        var dom = await RunChromium($"--host-resolver-rules=\"MAP handoff.test 127.0.0.1\" --dump-dom http://handoff.test:{service.Address.Port}/ui/index.html");

        Assert.Contains("HTTP 403", dom);
        Assert.Contains("only a loopback caller may, addressed to localhost or a loopback address and not on behalf of another site. Configure Handoff:ApiToken to accept others", dom);
    }

    [Fact]
    public async Task Status_page_content_is_in_a_main_landmark_and_its_table_is_named_by_the_heading()
    {
        await using var service = await StartWithTokenAsync("status-page-landmark-token-0123456789", "acme/shop");

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html");

        // Landmarks are how a screen reader's user moves through a page: one with none has to be read from the top.
        var main = dom.IndexOf("<main>", StringComparison.Ordinal);
        Assert.True(main >= 0, "the page has no <main> landmark");
        Assert.True(dom.IndexOf("<h1", StringComparison.Ordinal) > main && dom.IndexOf("</table>", StringComparison.Ordinal) < dom.IndexOf("</main>", StringComparison.Ordinal),
            "the heading and the table are outside the main landmark");
        Assert.Contains("<h1 id=\"title\">", dom);
        Assert.Contains("<table aria-labelledby=\"title\">", dom);
    }

    [Fact]
    public async Task Runs_read_with_the_api_token_are_not_written_to_the_browsers_disk_cache()
    {
        const string token = "status-page-cache-token-0123456789";
        await using var service = await StartWithTokenAsync(token, "acme/privaterepo");
        var profile = temp.File("chromium-profile-cache");

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={token}", profile);

        Assert.Contains("acme/privaterepo", dom);
        var cache = Path.Combine(profile, "Default", "Cache");
        var cached = Directory.Exists(cache)
            ? Directory.EnumerateFiles(cache, "*", SearchOption.AllDirectories).Where(file => File.ReadAllText(file).Contains("acme/privaterepo")).ToList()
            : [];
        Assert.Empty(cached);
    }

    [Fact]
    public async Task Status_page_given_a_token_with_a_bare_percent_sign_still_loads_the_runs()
    {
        const string token = "pct%token-0123456789abcdef";
        await using var service = await StartWithTokenAsync(token, "acme/shop");

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={token}");

        Assert.Contains("acme/shop", dom);
    }

    [Fact]
    public async Task Status_page_in_dapr_mode_with_an_app_token_explains_the_sidecar_route_instead_of_asking_for_a_token()
    {
        Assert.True(File.Exists(HeadlessChromium.Path), "Chromium is required: apt-get install chromium (.ci/run does this)");
        const string appToken = "dapr-app-token-0123456789abcdef";
        await using var service = await ServiceProcess.StartAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Dapr", ["APP_API_TOKEN"] = appToken, ["DAPR_HTTP_PORT"] = "1", ["DAPR_GRPC_PORT"] = "2",
        });

        var dom = await RunChromium($"--dump-dom {service.Address}ui/index.html#token={appToken}");

        Assert.Contains("/v1.0/invoke/handoff/method/runs", dom);
        Assert.DoesNotContain("Handoff:ApiToken", dom);
        Assert.DoesNotContain("token was refused", dom);
    }

    /// <summary>The built service in embedded mode with an API token, holding one run launched on <paramref name="repository"/>.</summary>
    private async Task<ServiceProcess> StartWithTokenAsync(string token, string repository)
    {
        Assert.True(File.Exists(HeadlessChromium.Path), "Chromium is required: apt-get install chromium (.ci/run does this)");
        var service = await ServiceProcess.StartAsync(new Dictionary<string, string>
        {
            ["Handoff__Mode"] = "Embedded",
            ["Handoff__DataPath"] = temp.File($"{Guid.NewGuid():N}.db"),
            ["Handoff__ApiToken"] = token,
            ["Handoff__Integrations__42__BaseUrl"] = cursor.Url,
            ["Handoff__Integrations__42__ApiKey"] = "ui-test-key",
            ["Handoff__Integrations__43__ApiKey"] = "ui-test-token",
        });
        using var client = new HttpClient { BaseAddress = service.Address };
        client.DefaultRequestHeaders.Authorization = new("Bearer", token);
        (await client.PostJsonAsync("/runs/881/handoff", Payloads.Trigger(Payloads.Run(881, [repository], automation: false)))).EnsureSuccessStatusCode();
        return service;
    }

    private static async Task WaitUntilCompleted(HttpClient client, string agentId)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var view = JsonNode.Parse(await client.GetStringAsync("/runs/880/handoff"))!;
            if (view["coding_agents"]?[agentId]?["status"]?.GetValue<string>() == "completed")
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, "the agent was not completed by polling: " + view.ToJsonString());
            await Task.Delay(100);
        }
    }

    /// <param name="profile">The browser's profile folder, to look into afterwards; a fresh one by default.</param>
    private Task<string> RunChromium(string arguments, string? profile = null, int budgetMs = 3000) =>
        HeadlessChromium.RunAsync(arguments, profile ?? temp.File("chromium-" + Guid.NewGuid().ToString("N")), budgetMs);

    private static int BigEndian(byte[] bytes, int offset) => (bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3];

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
