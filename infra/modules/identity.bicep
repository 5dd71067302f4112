// The single user-assigned managed identity of the app. Every data-plane permission the
// function app has (storage, Key Vault, Application Insights) is granted to this identity
// in rbac.bicep, and the app settings tell each client to use it by client id.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
