using System.Text.Json;
using HandoffDapr.Service.Api;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// A status the app sets without a body (the framework's own refusals) is written as our problem. No request found
/// over HTTP makes the framework set a bare 400 here, so the status-code page's writer is asked directly: docs/api.md
/// says a client's 400 is only ever invalid-body or invalid-request.
/// </summary>
public sealed class BareStatusProblemTests
{
    [Fact]
    public async Task Bare_400_is_an_invalid_request_problem()
    {
        var problem = await WriteBareAsync(StatusCodes.Status400BadRequest);

        Assert.Equal(400, problem.GetProperty("status").GetInt32());
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", problem.GetProperty("type").GetString());
        Assert.Equal("The request could not be read.", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData(StatusCodes.Status409Conflict, "Conflict")]
    [InlineData(StatusCodes.Status501NotImplemented, "Not Implemented")]
    public async Task Other_bare_status_is_an_http_status_problem(int status, string title)
    {
        var problem = await WriteBareAsync(status);

        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        Assert.Equal($"https://handoff-dapr.dev/problems/http-{status}", problem.GetProperty("type").GetString());
        Assert.Equal(title, problem.GetProperty("title").GetString());
        Assert.Equal("The request could not be served.", problem.GetProperty("detail").GetString());
    }

    private static async Task<JsonElement> WriteBareAsync(int status)
    {
        var services = new ServiceCollection().AddLogging().AddProblemDetails().BuildServiceProvider();
        var context = new DefaultHttpContext { RequestServices = services };
        context.Response.StatusCode = status;
        var body = new MemoryStream();
        context.Response.Body = body;

        await Problems.WriteForBareStatus(new StatusCodeContext(context, new StatusCodePagesOptions(), _ => Task.CompletedTask));

        Assert.Equal(status, context.Response.StatusCode);
        Assert.StartsWith("application/problem+json", context.Response.ContentType);
        return JsonDocument.Parse(body.ToArray()).RootElement;
    }
}
