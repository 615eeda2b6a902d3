"""Azure ML's swagger templates, as azmlinfsrv 1.5.1 ships them (``server/swagger2_template.json`` and
``server/swagger3_template.json`` of ``azureml-inference-server-http``; Copyright (c) Microsoft Corporation,
MIT License), so that ``/swagger.json`` is the document azmlinfsrv serves, byte for byte.

azmlinfsrv replaces ``$SERVICE_NAME$``, ``$SERVICE_VERSION$`` and ``$PATH_PREFIX$`` in the text, parses it, sets
``ServiceInput`` and ``ServiceOutput`` to inference_schema's schemas (``openapi`` to ``3.1.0`` for version 3.1)
and serves ``json.dumps`` of the result: :func:`mlops_backend.swagger.azure_document` does the same.
"""

SWAGGER2 = r"""
{
 "swagger": "2.0",
 "info": {
  "title": "$SERVICE_NAME$",
  "description": "API specification for the Azure Machine Learning service $SERVICE_NAME$",
  "version": "$SERVICE_VERSION$"
 },
 "schemes": [
  "https"
 ],
 "consumes": [
  "application/json"
 ],
 "produces": [
  "application/json"
 ],
 "securityDefinitions": {
  "Bearer": {
   "type": "apiKey",
   "name": "Authorization",
   "in": "header",
   "description": "For example: Bearer abc123"
  }
 },
 "paths": {
  "$PATH_PREFIX$/": {
   "get": {
    "operationId": "ServiceHealthCheck",
    "description": "Simple health check endpoint to ensure the service is up at any given point.",
    "responses": {
     "200": {
      "description": "If service is up and running, this response will be returned with the content 'Healthy'",
      "schema": {
       "type": "string"
      },
      "examples": {
       "application/json": "Healthy"
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "schema": {
       "$ref": "#/definitions/ErrorResponse"
      }
     }
    }
   }
  },
  "$PATH_PREFIX$/score": {
   "post": {
    "operationId": "RunMLService",
    "description": "Run web service's model and get the prediction output",
    "security": [
     {
      "Bearer": []
     }
    ],
    "parameters": [
     {
      "name": "serviceInputPayload",
      "in": "body",
      "description": "The input payload for executing the real-time machine learning service.",
      "schema": {
       "$ref": "#/definitions/ServiceInput"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "The service processed the input correctly and provided a result prediction, if applicable.",
      "schema": {
       "$ref": "#/definitions/ServiceOutput"
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "schema": {
       "$ref": "#/definitions/ErrorResponse"
      }
     }
    }
   }
  },
  "$PATH_PREFIX$/swagger.json": {
   "get": {
    "operationId": "GetSwaggerSpec",
    "description": "Get the Swagger specification.",
    "parameters": [
     {
      "name": "version",
      "in": "query",
      "required": false,
      "type": "integer",
      "enum": [
       2,
       3
      ]
     }
    ],
    "responses": {
     "200": {
      "description": "The Swagger specification.",
      "schema": {
       "type": "string"
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "schema": {
       "$ref": "#/definitions/ErrorResponse"
      }
     }
    }
   }
  }
 },
 "definitions": {
  "ServiceInput": {
   "type": "object",
   "properties": {
    "param": {
     "type": "object",
     "additionalProperties": {
      "type": "object"
     }
    }
   }
  },
  "ServiceOutput": {
   "type": "object",
   "additionalProperties": {
    "type": "object"
   }
  },
  "ErrorResponse": {
   "type": "object",
   "properties": {
    "message": {
     "type": "string"
    }
   }
  }
 }
}
"""

SWAGGER3 = r"""
{
 "openapi": "3.0.3",
 "info": {
  "title": "$SERVICE_NAME$",
  "description": "API specification for the Azure Machine Learning service $SERVICE_NAME$",
  "version": "$SERVICE_VERSION$"
 },
 "security": [
  {
   "Bearer": []
  }
 ],
 "paths": {
  "$PATH_PREFIX$/": {
   "get": {
    "operationId": "ServiceHealthCheck",
    "description": "Simple health check endpoint to ensure the service is up at any given point.",
    "responses": {
     "200": {
      "description": "If service is up and running, this response will be returned with the content 'Healthy'",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string",
         "example": "Healthy"
        }
       }
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ErrorResponse"
        }
       }
      }
     }
    }
   }
  },
  "$PATH_PREFIX$/score": {
   "post": {
    "operationId": "RunMLService",
    "description": "Run web service's model and get the prediction output",
    "security": [
     {
      "Bearer": []
     }
    ],
    "requestBody": {
     "description": "The input payload for executing the real-time machine learning service.",
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/ServiceInput"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "The service processed the input correctly and provided a result prediction, if applicable.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ServiceOutput"
        }
       }
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ErrorResponse"
        }
       }
      }
     }
    }
   }
  },
  "$PATH_PREFIX$/swagger.json": {
   "get": {
    "operationId": "GetSwaggerSpec",
    "description": "Get the Swagger specification.",
    "parameters": [
     {
      "name": "version",
      "in": "query",
      "required": false,
      "schema": {
       "type": "integer",
       "enum": [
        2,
        3
       ]
      }
     }
    ],
    "responses": {
     "200": {
      "description": "The Swagger specification.",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "description": "The service failed to execute due to an error.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ErrorResponse"
        }
       }
      }
     }
    }
   }
  }
 },
 "components": {
  "schemas": {
   "ServiceInput": {
    "type": "object",
    "properties": {
     "param": {
      "type": "object",
      "additionalProperties": {
       "type": "object"
      }
     }
    }
   },
   "ServiceOutput": {
    "type": "object",
    "additionalProperties": {
     "type": "object"
    }
   },
   "ErrorResponse": {
    "type": "object",
    "properties": {
     "message": {
      "type": "string"
     }
    }
   }
  },
  "securitySchemes": {
   "Bearer": {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "For example: Bearer abc123"
   }
  }
 }
}
"""
