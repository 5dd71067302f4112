// Private networking (main.bicep deploys this module only with vnetEnabled=true):
//   - a virtual network with a subnet for the function app's VNet integration (delegated
//     to Microsoft.App/environments, as Flex Consumption requires) and one for private
//     endpoints;
//   - private endpoints for the storage account's blob, queue and table services and for
//     Key Vault, each registered in its private DNS zone, which is linked to the network;
//   - an explicit outbound route to the internet (Entra ID, the Defender API, Graph and
//     delivery destinations): a NAT gateway with one static public IP (natGatewayEnabled),
//     or else the subnet's default outbound access, switched on explicitly.
// Inbound traffic to the function app stays public: customers' browsers must reach the
// consent routes.

@description('Virtual network name.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Address space of the network.')
param addressPrefix string = '10.20.0.0/16'

@description('Subnet of the function app\'s VNet integration (a /26 leaves room to scale out).')
param appSubnetPrefix string = '10.20.0.0/26'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.20.1.0/28'

@description('Give the app a NAT gateway with a static public IP for outbound traffic. Off: the subnet\'s default outbound access carries it (Azure is retiring that for new networks).')
param natGatewayEnabled bool = true

@description('NAT gateway name.')
param natGatewayName string

@description('Storage account that gets blob, queue and table private endpoints.')
param storageAccountName string

@description('Key Vault that gets a private endpoint.')
param keyVaultName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource natIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = if (natGatewayEnabled) {
  name: '${natGatewayName}-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource natGateway 'Microsoft.Network/natGateways@2024-05-01' = if (natGatewayEnabled) {
  name: natGatewayName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natIp.id
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          // The outbound route is a decision, not a default: the NAT gateway, or the
          // platform's default outbound access switched on explicitly.
          defaultOutboundAccess: !natGatewayEnabled
          natGateway: natGatewayEnabled
            ? {
                id: natGateway.id
              }
            : null
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          defaultOutboundAccess: false
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

// One private endpoint per storage service the app and the host use, and one for the vault.
// The DNS zone names follow the cloud (environment()), so sovereign clouds work too.
var endpoints = [
  {
    name: 'blob'
    targetId: storage.id
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    targetId: storage.id
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    targetId: storage.id
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'vault'
    targetId: vault.id
    groupId: 'vault'
    // .vault.azure.net -> privatelink.vaultcore.azure.net (and the same in other clouds)
    zone: 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for e in endpoints: {
    name: e.zone
    location: 'global'
    tags: tags
  }
]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (e, i) in endpoints: {
    parent: zones[i]
    name: '${name}-link'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for e in endpoints: {
    name: 'pe-${e.name}-${name}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'private-endpoints')
      }
      privateLinkServiceConnections: [
        {
          name: e.name
          properties: {
            privateLinkServiceId: e.targetId
            groupIds: [
              e.groupId
            ]
          }
        }
      ]
    }
  }
]

resource dnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (e, i) in endpoints: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: e.name
          properties: {
            privateDnsZoneId: zones[i].id
          }
        }
      ]
    }
  }
]

output vnetId string = vnet.id
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'app')
output natPublicIp string = natGatewayEnabled ? natIp!.properties.ipAddress : ''
