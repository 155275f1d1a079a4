using HandoffDapr.Service.Extensions;

var builder = WebApplication.CreateBuilder(args);
builder.AddHandoffServices();

var app = builder.Build();
app.MapHandoff();
app.Run();

/// <summary>Visible to <c>WebApplicationFactory</c> in the tests.</summary>
public partial class Program;
